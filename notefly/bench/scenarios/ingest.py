"""1. Ingest: ``POST /pub`` (202 only after commit) at 64 connections, against a bare
Quart app that answers 202 and does nothing, with the same number of workers.

wrk drives both, taking turns (bare, Notefly, bare, Notefly...) so that both see the
same machine; the rate is the best turn of each, the p99 the worst turn of Notefly.
The category has no subscribers: this measures accepting, not delivering.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notefly.bench import procs, seed
from notefly.bench.harness import Bench, Result, notefly, wait_http
from notefly.bench.procs import tree_cpu_seconds
from notefly.bench.report import Row, Target, not_measured, number
from notefly.bench.wrk import WrkResult, lua_script, run_wrk

SCENARIO = "1 ingest"
CATEGORY = "bench-ingest"
RATE = ("POST /pub rate vs bare Quart", Target(">=", 0.75, "x"))
P99 = ("POST /pub p99 latency", Target("<", 50, "ms"))
CHECKS = (RATE, P99)
WARMUP_SECONDS = 2
BODY = json.dumps(
    {"category": CATEGORY, "title": "Benchmark", "body": "A message of about the usual size."}
)


async def run(bench: Bench) -> Result:
    if bench.wrk is None:
        reason = "wrk is not installed (apt-get install wrk)"
        return Result([not_measured(SCENARIO, m, reason, t) for m, t in CHECKS])
    result = Result()
    bare_turns, notefly_turns = await _turns(bench, uvloop=False)
    bare_runs, notefly_runs = [t.wrk for t in bare_turns], [t.wrk for t in notefly_turns]
    best_bare = max(bare_runs, key=lambda r: r.rate)
    best = max(notefly_runs, key=lambda r: r.rate)
    worst_p99 = max(r.p99_ms for r in notefly_runs)
    bench.shared["ingest_rate"] = best.rate
    conns = bench.sizes.ingest_connections
    errors = sum(r.errors + r.bad_status for r in notefly_runs)
    result.rows += [
        Row(
            SCENARIO,
            RATE[0],
            best.rate / best_bare.rate if best_bare.rate else None,
            "x",
            RATE[1],
            detail=f"{number(best.rate)} vs {number(best_bare.rate)} req/s, {bench.workers}"
            f" workers, {conns} connections" + (f", {errors} errors" if errors else ""),
            reason="the bare app answered nothing",
        ),
        Row(
            SCENARIO,
            P99[0],
            worst_p99,
            "ms",
            P99[1],
            detail=f"p50 {number(best.p50_ms)} ms; bare Quart p99 "
            f"{number(max(r.p99_ms for r in bare_runs))} ms",
        ),
    ]
    mine = min(t.cpu_ms_per_request for t in notefly_turns)
    theirs = min(t.cpu_ms_per_request for t in bare_turns)
    if mine and theirs:
        result.rows.append(
            Row(
                SCENARIO,
                "CPU time per request vs bare Quart",
                mine / theirs,
                "x",
                detail=f"{number(mine)} vs {number(theirs)} ms, all processes",
            )
        )
    result.raw = {
        "connections": conns,
        "bare": [t.to_json() for t in bare_turns],
        "notefly": [t.to_json() for t in notefly_turns],
    }
    if bench.uvloop:
        await _with_uvloop(bench, result)
    return result


@dataclass(frozen=True, slots=True)
class Turn:
    """One wrk run, and the CPU time the server's processes used meanwhile: what a
    request costs, however busy the machine was."""

    wrk: WrkResult
    cpu_seconds: float

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds / self.wrk.ok * 1000 if self.wrk.ok else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.wrk.to_json(),
            "cpu_seconds": self.cpu_seconds,
            "cpu_ms_per_request": self.cpu_ms_per_request,
        }


async def _turns(bench: Bench, *, uvloop: bool) -> tuple[list[Turn], list[Turn]]:
    assert bench.wrk is not None
    scratch = bench.scratch("ingest-uvloop" if uvloop else "ingest")
    script = scratch / "publish.lua"
    script.write_text(lua_script(BODY))
    env = _uvloop_env(bench, scratch) if uvloop else bench.env
    seconds, conns = bench.sizes.ingest_seconds, bench.sizes.ingest_connections
    bare_runs: list[Turn] = []
    notefly_runs: list[Turn] = []
    seed_ingest = lambda db: seed.seed_categories(db, [CATEGORY])  # noqa: E731
    with _bare(bench, scratch, uvloop=uvloop) as bare_url:
        await wait_http(*bare_url)
        _server, url = bare_url
        async with notefly(bench, "ingest-notefly", seed_ingest, env=env) as node:
            for target in (url, node.url):  # warm both up, unmeasured
                await run_wrk(
                    bench.wrk, f"{target}/pub", script, connections=conns, seconds=WARMUP_SECONDS
                )
            for turn in range(bench.sizes.ingest_rounds):
                for server, target, runs in (
                    (bare_url[0], url, bare_runs),
                    (node.server, node.url, notefly_runs),
                ):
                    cpu = tree_cpu_seconds(server.pid)
                    result = await run_wrk(
                        bench.wrk, f"{target}/pub", script, connections=conns, seconds=seconds
                    )
                    runs.append(Turn(result, tree_cpu_seconds(server.pid) - cpu))
                bench.say(
                    f"  turn {turn + 1}: bare {number(bare_runs[-1].wrk.rate)} req/s,"
                    f" notefly {number(notefly_runs[-1].wrk.rate)} req/s"
                    f" (p99 {number(notefly_runs[-1].wrk.p99_ms)} ms)"
                )
            committed = node.log.messages()
            answered = sum(t.wrk.ok for t in notefly_runs)
            if committed < answered:  # a 202 must mean committed
                raise AssertionError(f"{answered} accepted but only {committed} committed")
    return bare_runs, notefly_runs


@contextlib.contextmanager
def _bare(bench: Bench, scratch: Path, *, uvloop: bool) -> Iterator[tuple[procs.Server, str]]:
    server, url = procs.bare_server(bench.workers, bench.env, scratch / "bare.log", uvloop=uvloop)
    server.start()
    try:
        yield server, url
    finally:
        server.stop()


def _uvloop_env(bench: Bench, scratch: Path) -> dict[str, str]:
    """Notefly under uvloop without changing it: a sitecustomize that installs the
    uvloop event loop policy before ``asyncio.run``, in every worker process."""
    hook = scratch / "uvloop-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import asyncio\nimport uvloop\n\nasyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
    )
    path = [str(hook), *filter(None, [bench.env.get("PYTHONPATH")])]
    return {**bench.env, "PYTHONPATH": ":".join(path)}


async def _with_uvloop(bench: Bench, result: Result) -> None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        bench.say("  uvloop is not installed: skipped")
        result.rows.append(Row(SCENARIO, "with uvloop", None, reason="uvloop is not installed"))
        return
    bare_turns, notefly_turns = await _turns(bench, uvloop=True)
    bare = max(t.wrk.rate for t in bare_turns)
    best = max((t.wrk for t in notefly_turns), key=lambda r: r.rate)
    result.rows.append(
        Row(
            SCENARIO,
            "with uvloop: rate vs bare Quart (uvloop)",
            best.rate / bare,
            "x",
            detail=f"{number(best.rate)} vs {number(bare)} req/s, p99 {number(best.p99_ms)} ms",
        )
    )
    result.raw["uvloop"] = {
        "bare": [t.to_json() for t in bare_turns],
        "notefly": [t.to_json() for t in notefly_turns],
        "python": sys.version.split()[0],
    }
