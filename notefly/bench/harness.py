"""What every scenario shares: sizes, the environment of the servers, and a Notefly
started on a seeded database of its own and stopped when the scenario is done."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notefly.bench import loadgen, seed
from notefly.bench.deliverylog import DeliveryLog
from notefly.bench.procs import Server, ServerError, UseSampler, notefly_server
from notefly.bench.report import Row

# Variables a benchmark sets itself; any other NOTEFLY_* of the caller's environment
# (shards per channel, round size...) passes through, and the report names it.
OWN_VARIABLES = (
    "NOTEFLY_DATA_DIR",
    "NOTEFLY_DATABASE_URL",
    "NOTEFLY_LOG_LEVEL",
    "NOTEFLY_LOG_FORMAT",
    "NOTEFLY_BROKER_HOST",
    "NOTEFLY_BROKER_PORT",
    "NOTEFLY_CLIENT_HOST",
    "NOTEFLY_CLIENT_PORT",
    "NOTEFLY_WORKERS",
    "NOTEFLY_NODE_ID",
    "NOTEFLY_BENCH_POSTGRES_URL",  # where the nodes scenario makes its databases
)


@dataclass(frozen=True, slots=True)
class Sizes:
    ingest_seconds: float
    ingest_rounds: int  # bare app and Notefly take turns this many times
    latency_seconds: float
    scale_small: int
    scale_large: int
    scale_small_runs: int = 3  # the small broadcast's median time is taken
    ingest_connections: int = 64
    fanout_subscribers: int = 10_000
    fanout_messages: int = 5
    fanout_rounds: int = 3  # the plain loop and Notefly take turns this many times
    digest_users: int = 100_000
    nodes_subscribers: int = 5_000  # PostgreSQL, with 1, 2 and 3 broker nodes
    nodes_messages: int = 6  # a multiple of 2 and 3: every node accepts as many
    nodes_ingest: int = 300  # the fixed-count POST /pub burst of each node count


FULL = Sizes(
    ingest_seconds=8,
    ingest_rounds=3,
    latency_seconds=10,
    scale_small=100_000,
    scale_large=1_000_000,
)
QUICK = Sizes(
    ingest_seconds=4,
    ingest_rounds=1,
    latency_seconds=4,
    scale_small=10_000,
    scale_large=100_000,
    fanout_rounds=1,
    digest_users=10_000,
    nodes_subscribers=1_000,
    nodes_ingest=150,
)


def server_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of the servers under test: the caller's, with logging at
    ``warning`` (the log providers log every notification at ``info``, which would
    measure the log instead of Notefly) and none of the variables the bench sets."""
    env = {k: v for k, v in base.items() if k not in OWN_VARIABLES}
    env["NOTEFLY_LOG_LEVEL"] = "warning"
    env["NOTEFLY_LOG_FORMAT"] = "json"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tuning(env: Mapping[str, str]) -> dict[str, str]:
    """The NOTEFLY_* settings passed through to the servers."""
    return {k: v for k, v in sorted(env.items()) if k.startswith("NOTEFLY_")}


@dataclass
class Bench:
    """One ``notefly bench`` run: sizes, where its files go, and what scenarios share."""

    sizes: Sizes
    workers: int
    workdir: Path
    env: dict[str, str]
    wrk: str | None
    say: Callable[[str], None]
    uvloop: bool = False
    keep: bool = False  # --keep: leave the databases of the run in place
    deadline: float = float("inf")  # time.monotonic() by which the run should be over
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    shared: dict[str, Any] = field(default_factory=dict)
    _serial: int = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def scratch(self, name: str) -> Path:
        self._serial += 1
        path = self.workdir / f"{self._serial:02d}-{name}"
        path.mkdir(parents=True)
        return path


@dataclass(frozen=True, slots=True)
class CopyOf:
    """Seed data that is a whole Notefly database already (migrated and seeded): a new
    database is a copy of it, with no schema made first only to be overwritten."""

    source: Path

    def __call__(self, db: Path) -> None:
        shutil.copyfile(self.source, db)


async def prepare(db: Path, seed_data: Callable[[Path], Any]) -> None:
    """Fill the new database at ``db``: a ``CopyOf`` copies its source; any other
    ``seed_data(db)`` seeds a freshly migrated schema."""
    if not isinstance(seed_data, CopyOf):
        await seed.create_schema(db)
    seed_data(db)


@dataclass
class Running:
    """A started Notefly: its URL, its database, the delivery log and the sampler."""

    server: Server
    url: str
    db: Path
    log: DeliveryLog
    sampler: UseSampler


@contextlib.asynccontextmanager
async def notefly(
    bench: Bench,
    name: str,
    seed_data: Callable[[Path], Any],
    *,
    sample: bool = False,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Running]:
    """A Notefly with ``bench.workers`` nodes on a fresh database filled by
    ``prepare(path, seed_data)``; with ``sample``, its processes' memory and threads are
    sampled from start to stop. ``env``: instead of ``bench.env``."""
    data_dir = bench.scratch(name)
    db = data_dir / "notefly.db"
    await prepare(db, seed_data)
    server, url = notefly_server(
        data_dir, bench.workers, bench.env if env is None else env, data_dir / "notefly.log"
    )
    server.start()
    stop_sampling = asyncio.Event()
    sampler = UseSampler(server.pid)
    sampling = asyncio.create_task(sampler.run(stop_sampling)) if sample else None
    log = DeliveryLog(db)
    try:
        await wait_ready(server, url, log, bench.workers)
        yield Running(server, url, db, log, sampler)
    finally:
        stop_sampling.set()
        if sampling is not None:
            await sampling
        log.close()
        code = await asyncio.to_thread(server.stop)
        if code not in (0, None):
            bench.say(f"  {name}: notefly exited with {code}; log in {data_dir}")


async def wait_ready(server: Server, url: str, log: DeliveryLog, workers: int) -> None:
    """Until every worker heartbeats and serves: a connection made before a worker
    listens would go to the others for the whole run (SO_REUSEPORT picks at connect)."""
    deadline = time.monotonic() + 60
    seen: set[str] = set()
    while len(seen) < workers:
        server.check_alive()
        if time.monotonic() > deadline:
            raise ServerError(
                f"{len(seen)} of {workers} workers ready within 60 s:\n{server.log_tail()}"
            )
        with contextlib.suppress(
            OSError, asyncio.IncompleteReadError, TimeoutError, loadgen.HttpError, ValueError
        ):
            if await asyncio.to_thread(log.nodes) >= workers:
                response = await loadgen.get(url, "/status")
                if response.status == 200:
                    seen.add(str(json.loads(response.body).get("node")))
                    continue
        await asyncio.sleep(0.1)


async def wait_http(server: Server, url: str, within: float = 30) -> None:
    """Until ``url`` answers ``/healthz`` with 200."""
    deadline = time.monotonic() + within
    while True:
        server.check_alive()
        with contextlib.suppress(
            OSError, asyncio.IncompleteReadError, TimeoutError, loadgen.HttpError
        ):
            if (await loadgen.get(url, "/healthz")).status == 200:
                return
        if time.monotonic() > deadline:
            raise ServerError(
                f"{server.name} did not answer within {within:.0f} s:\n{server.log_tail()}"
            )
        await asyncio.sleep(0.1)


@dataclass
class Result:
    """What a scenario found: report rows, and raw numbers for the JSON."""

    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
