"""``notefly bench``: run the scenarios, print the table, write the JSON."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from notefly.bench.harness import FULL, QUICK, Bench, Result, server_env, tuning
from notefly.bench.report import Report, not_measured
from notefly.bench.scenarios import digest, fanout, ingest, latency, nodes, scale
from notefly.bench.wrk import find_wrk

# In this order: latency runs at half the rate ingest measured.
SCENARIOS: dict[str, ModuleType] = {
    "ingest": ingest,
    "fanout": fanout,
    "latency": latency,
    "digest": digest,
    "nodes": nodes,  # PostgreSQL, 1 to 3 broker nodes
    "scale": scale,  # last: its large broadcast gets what is left of the time
}
# Seconds the whole run may take; the scale scenario's large broadcast gets what is left.
BUDGET = {"full": 580.0, "quick": 240.0}


def command(args: argparse.Namespace) -> int:
    names = _selected(args.only)
    mode = "quick" if args.quick else "full"
    workers = args.workers or os.cpu_count() or 1
    workdir = Path(tempfile.mkdtemp(prefix="notefly-bench-"))
    bench = Bench(
        sizes=QUICK if args.quick else FULL,
        workers=workers,
        workdir=workdir,
        env=server_env(os.environ),
        wrk=find_wrk(),
        say=lambda text: print(text, file=sys.stderr, flush=True),
        uvloop=args.uvloop,
        keep=args.keep,
        deadline=time.monotonic() + BUDGET[mode],
    )
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        results, errors = asyncio.run(_run(bench, names))
    finally:
        if args.keep:
            bench.say(f"notefly bench: databases and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = Report(
        title=f"notefly bench ({mode}): {len(names)} scenarios in"
        f" {time.monotonic() - started:.0f} s",
        machine=machine(load_before),
        settings=settings(bench),
    )
    for name, result in results:
        report.rows += result.rows
        report.raw[name] = result.raw
    report.rows.sort(key=lambda row: row.scenario)  # in the order
    print(report.text(), flush=True)
    if args.json:
        report.write_json(args.json)
        bench.say(f"notefly bench: JSON written to {args.json}")
    if errors:
        return 1
    return 1 if args.strict and report.failed else 0


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"notefly bench: unknown scenario {', '.join(unknown)}"
            f" (choose from {', '.join(SCENARIOS)})"
        )
    return [n for n in SCENARIOS if n in names]


async def _run(bench: Bench, names: list[str]) -> tuple[list[tuple[str, Result]], int]:
    results, errors = [], 0
    for name in names:
        module = SCENARIOS[name]
        bench.say(f"{module.SCENARIO}...")
        began = time.monotonic()
        try:
            result = await module.run(bench)
        except Exception as exc:  # one broken scenario must not hide the others' numbers
            errors += 1
            traceback.print_exc()
            reason = f"error: {exc!r}".splitlines()[0][:200]
            result = Result(
                [
                    not_measured(module.SCENARIO, m, reason, t)
                    for m, t in getattr(module, "CHECKS", ())
                ],
                {"error": repr(exc)},
            )
        result.raw["seconds"] = round(time.monotonic() - began, 1)
        bench.say(f"{module.SCENARIO}: {result.raw['seconds']:.0f} s")
        results.append((name, result))
    return results, errors


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was."""
    return {
        "cpu": f"{os.cpu_count()} x {_cpu_model()}",
        "memory": f"{_mem_total_gib():.1f} GiB",
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}",
        "load average (1 min) before / after": f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}",
    }


def settings(bench: Bench) -> dict[str, Any]:
    passed = tuning(bench.env)
    passed.pop("NOTEFLY_LOG_FORMAT", None)
    return {
        "notefly": f"{bench.workers} workers (`notefly up --workers {bench.workers}`), SQLite"
        " (WAL, synchronous=FULL), log providers, NOTEFLY_LOG_LEVEL=warning",
        "settings passed through": ", ".join(
            f"{k}={v}" for k, v in passed.items() if k != "NOTEFLY_LOG_LEVEL"
        )
        or "defaults",
        "load generator": f"wrk ({'found' if bench.wrk else 'missing'}) for ingest,"
        " asyncio client for latency and bursts",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0
