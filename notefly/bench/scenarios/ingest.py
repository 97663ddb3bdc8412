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
from pathlib import Path

from notefly.bench import procs, seed
from notefly.bench.harness import Bench, Result, notefly, wait_http
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
    bare_runs, notefly_runs = await _turns(bench, uvloop=False)
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
    result.raw = {
        "connections": conns,
        "bare": [r.to_json() for r in bare_runs],
        "notefly": [r.to_json() for r in notefly_runs],
    }
    if bench.uvloop:
        await _with_uvloop(bench, result)
    return result


async def _turns(bench: Bench, *, uvloop: bool) -> tuple[list[WrkResult], list[WrkResult]]:
    assert bench.wrk is not None
    scratch = bench.scratch("ingest-uvloop" if uvloop else "ingest")
    script = scratch / "publish.lua"
    script.write_text(lua_script(BODY))
    env = _uvloop_env(bench, scratch) if uvloop else bench.env
    seconds, conns = bench.sizes.ingest_seconds, bench.sizes.ingest_connections
    bare_runs: list[WrkResult] = []
    notefly_runs: list[WrkResult] = []
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
                bare_runs.append(
                    await run_wrk(
                        bench.wrk, f"{url}/pub", script, connections=conns, seconds=seconds
                    )
                )
                notefly_runs.append(
                    await run_wrk(
                        bench.wrk, f"{node.url}/pub", script, connections=conns, seconds=seconds
                    )
                )
                bench.say(
                    f"  turn {turn + 1}: bare {number(bare_runs[-1].rate)} req/s,"
                    f" notefly {number(notefly_runs[-1].rate)} req/s"
                    f" (p99 {number(notefly_runs[-1].p99_ms)} ms)"
                )
            committed = node.log.messages()
            answered = sum(r.ok for r in notefly_runs)
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
    bare_runs, notefly_runs = await _turns(bench, uvloop=True)
    bare, best = max(r.rate for r in bare_runs), max(notefly_runs, key=lambda r: r.rate)
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
        "bare": [r.to_json() for r in bare_runs],
        "notefly": [r.to_json() for r in notefly_runs],
        "python": sys.version.split()[0],
    }
