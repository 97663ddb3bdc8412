"""6. Nodes: throughput with 1, 2 and 3 broker nodes sharing one PostgreSQL database.

Each node is a ``notefly broker`` process of its own (its port, data dir and
``NOTEFLY_NODE_ID``), as separate machines would run them. For each node count, on a
fresh copy of one seeded database: a short burst of publishes to a category without
subscribers (the ingest rate), then a burst of messages to a category of subscribers
on 1 to 3 of sms/email/push, spread round-robin over the nodes' ``/pub``. The rate runs
from the first accept to the last delivery recorded as sent. Every delivery must be sent
exactly once: the rows say so (one per message, user and channel, all ``sent``), and so
do the nodes' own counters (``notefly_deliveries_total`` of each node's ``/metrics``),
which would add up to more than the rows if two nodes had sent the same delivery.

On one machine the nodes and PostgreSQL share its cores: the rows show that nodes
cooperate (work spreads, nothing is lost or repeated, throughput holds), not linear
scaling, which needs a machine per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from notefly.bench import loadgen, seed
from notefly.bench.harness import Bench, Result
from notefly.bench.pglog import (
    BenchDatabases,
    PostgresDeliveryLog,
    PostgresUnavailable,
    add_category,
    admin_url,
    seed_subscribers,
    server_label,
    wait_done,
)
from notefly.bench.procs import Server, ServerError, free_port, tree_cpu_seconds
from notefly.bench.report import Row, Target, not_measured, number

SCENARIO = "6 nodes"
CATEGORY = "bench-nodes"
INGEST_CATEGORY = "bench-nodes-ingest"  # no subscribers: an accept and nothing else
NODE_COUNTS = (1, 2, 3)
ONCE = (
    "deliveries not sent exactly once, 1 / 2 / 3 nodes",
    Target("<=", 0, "deliveries"),
)
CHECKS = (ONCE,)
TITLE, BODY = "Rates up", "The key rate rose by a quarter point; markets took it calmly."
START_SECONDS = 60.0
TIMEOUT_SECONDS = 120.0  # per node count, for every delivery to be final
INGEST_CONNECTIONS = 32  # in all, split over the nodes
COUNTER_SECONDS = 5.0  # for the nodes' counters to catch up with the rows
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Set by the servers' environment of the caller, but one node's metrics must be its own.
DROPPED_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR",)


@dataclass
class NodesRun:
    """What one node count did."""

    nodes: int
    messages: int
    per_message: int
    finished: bool = False
    seconds: float | None = None  # first accept to the last delivery recorded as sent
    statuses: dict[str, int] = field(default_factory=dict)
    sent_per_message: dict[str, int] = field(default_factory=dict)
    repeated_rows: int = 0
    sent_by_node: dict[str, int] = field(default_factory=dict)  # each node's counter
    fanned_out_by_node: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    ingest_rate: float | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    stage: str = ""  # what the run was doing: named by an error
    error: str = ""
    log_tails: dict[str, str] = field(default_factory=dict)  # each node's, after an error

    @property
    def expected(self) -> int:
        return self.messages * self.per_message

    @property
    def rate(self) -> float | None:
        if not self.finished or not self.seconds:
            return None
        return self.statuses.get("sent", 0) / self.seconds


def sent_counter(exposition: str) -> int:
    """Deliveries a node counted as sent, from its Prometheus text (every channel and
    provider added up)."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        if family.name != "notefly_deliveries":
            continue
        for sample in family.samples:
            if sample.name == "notefly_deliveries_total" and sample.labels.get("status") == "sent":
                total += sample.value
    return round(total)


def problems(run: NodesRun) -> list[str]:
    """Why not every delivery of ``run`` was sent exactly once (empty when it was)."""
    if run.error:
        return [run.error]
    found = []
    if not run.finished:
        found.append(f"not finished within {TIMEOUT_SECONDS:.0f} s")
    if run.refused:
        found.append(f"{run.refused} publishes refused")
    if len(run.sent_per_message) != run.messages:
        found.append(f"{len(run.sent_per_message)} of {run.messages} messages accepted")
    short = {m: n for m, n in run.sent_per_message.items() if n != run.per_message}
    if short:
        found.append(f"{len(short)} messages with other than {run.per_message} sent")
    others = {s: n for s, n in run.statuses.items() if s != "sent" and n}
    if others:
        found.append(f"not sent: {others}")
    if run.repeated_rows:
        found.append(f"{run.repeated_rows} repeated delivery rows")
    counted = sum(run.sent_by_node.values())
    if counted != run.statuses.get("sent", 0):
        found.append(
            f"the nodes counted {counted} sent, the rows say {run.statuses.get('sent', 0)}"
        )
    return found


def off_by(run: NodesRun) -> int:
    """Deliveries not sent exactly once: missing ones plus repeated sends."""
    sent_rows = run.statuses.get("sent", 0)
    missing = max(0, run.expected - sent_rows)
    repeated = max(0, sum(run.sent_by_node.values()) - sent_rows) + run.repeated_rows
    return missing + repeated


def share(counts: Mapping[str, int]) -> str:
    """Each node's part of the whole, e.g. ``node-1 51% / node-2 49%``."""
    total = sum(counts.values())
    if not total:
        return "none"
    return " / ".join(f"{name} {100 * n / total:.0f}%" for name, n in sorted(counts.items()))


def sharing(postgres_host: str | None, cpus: int) -> str:
    """What the nodes share on this machine, which caps what more nodes can add."""
    who = "the nodes and PostgreSQL" if postgres_host in LOOPBACK else "the nodes"
    return f"one machine: {who} share its {cpus} cores"


def rows(runs: Sequence[NodesRun], subscribers: int, shared: str) -> list[Row]:
    """The report's rows: a rate per node count, the ratios to one node (``shared``
    says what the nodes had to share), the ingest rates, and the exactly-once check
    over every node count."""
    out = []
    for run in runs:
        measure = f"deliveries/s, {run.nodes} node{'s' if run.nodes > 1 else ''} (PostgreSQL)"
        if run.rate is None:
            reason = "; ".join(problems(run)) or "nothing sent"
            out.append(Row(SCENARIO, measure, None, reason=reason))
            continue
        notes = [
            f"{run.messages} messages x {number(run.per_message)} deliveries"
            f" ({number(subscribers)} subscribers)",
            f"sent by node: {share(run.sent_by_node)}",
        ]
        cpu, sent = sum(run.cpu_seconds.values()), run.statuses.get("sent", 0)
        if cpu and sent:
            notes.append(f"node CPU {number(cpu / sent * 1e6)} µs per delivery")
        if run.nodes > 1:
            notes.append(f"fan-out parts by node: {share(run.fanned_out_by_node)}")
        out.append(Row(SCENARIO, measure, run.rate, "deliveries/s", detail="; ".join(notes)))
    base = runs[0].rate if runs and runs[0].nodes == 1 else None
    for run in runs[1:]:
        measure = f"deliveries/s, {run.nodes} nodes / 1 node"
        if base and run.rate is not None:
            detail = f"{number(run.rate)} vs {number(base)} deliveries/s; {shared}"
            out.append(Row(SCENARIO, measure, run.rate / base, "x", detail=detail))
        else:
            out.append(Row(SCENARIO, measure, None, reason="a rate is missing"))
    ingest = [f"{number(r.ingest_rate)}" if r.ingest_rate is not None else "-" for r in runs]
    out.append(
        Row(
            SCENARIO,
            "POST /pub rate, " + " / ".join(f"{r.nodes}" for r in runs) + " nodes",
            None,
            detail=" / ".join(ingest) + f" req/s ({INGEST_CONNECTIONS} connections in all)",
        )
    )
    unverified = [
        f"{r.nodes} nodes: {'; '.join(problems(r))}"
        for r in runs
        if r.error or (problems(r) and not off_by(r))
    ]
    if unverified or not runs:
        out.append(not_measured(SCENARIO, ONCE[0], "; ".join(unverified) or "no run", ONCE[1]))
        return out
    notes = [
        f"{r.nodes} node{'s' if r.nodes > 1 else ''}: {number(r.statuses.get('sent', 0))}"
        f" of {number(r.expected)} sent, counted {number(sum(r.sent_by_node.values()))}"
        f" by the nodes" + (f" ({'; '.join(problems(r))})" if problems(r) else "")
        for r in runs
    ]
    total = sum(off_by(r) for r in runs)
    out.append(Row(SCENARIO, ONCE[0], total, "deliveries", ONCE[1], detail="; ".join(notes)))
    return out


async def run(bench: Bench) -> Result:
    sizes = bench.sizes
    subscribers, count = sizes.nodes_subscribers, sizes.nodes_messages
    dbs = BenchDatabases(admin_url(os.environ))
    try:
        version = await dbs.version()
    except PostgresUnavailable as exc:
        return Result([not_measured(SCENARIO, ONCE[0], str(exc), ONCE[1])], {"error": str(exc)})
    raw: dict[str, Any] = {
        "postgres": f"{version} at {server_label(dbs.admin)}",
        "subscribers": subscribers,
        "messages": count,
    }
    runs: list[NodesRun] = []
    try:
        template = await dbs.create()
        per_message = await seed_subscribers(
            dbs.url(template), CATEGORY, subscribers, seed.some_channels()
        )
        await add_category(dbs.url(template), INGEST_CATEGORY)
        raw["deliveries_per_message"] = per_message
        for n in NODE_COUNTS:
            bench.say(f"  {n} node(s): {count} messages x {number(per_message)} deliveries")
            nodes_run = NodesRun(n, count, per_message)
            try:
                await _measure(bench, dbs, template, nodes_run)
            except (
                ServerError,
                OSError,
                TimeoutError,
                loadgen.HttpError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                PostgresUnavailable,
            ) as exc:
                nodes_run.error = f"{nodes_run.stage}: {exc!r}".splitlines()[0][:300]
            bench.say(f"  {n} node(s): {_line(nodes_run)}")
            runs.append(nodes_run)
    finally:
        if bench.keep:
            bench.say(f"  nodes: PostgreSQL databases kept: {', '.join(dbs.created)}")
        else:
            try:
                await dbs.drop_all()
            except PostgresUnavailable as exc:
                bench.say(f"  nodes: could not drop {', '.join(dbs.created)}: {exc}")
    raw["runs"] = [{**asdict(r), "rate": r.rate} for r in runs]
    raw["postgres_databases"] = dbs.base
    shared = sharing(urlsplit(dbs.admin).hostname, bench.cpus)
    return Result(rows(runs, subscribers, shared), raw)


async def _measure(bench: Bench, dbs: BenchDatabases, template: str, run: NodesRun) -> None:
    run.stage = "creating its database"
    name = await dbs.create(f"{run.nodes}nodes", template=template)
    url = dbs.url(name)
    env = {k: v for k, v in bench.env.items() if k not in DROPPED_VARIABLES}
    env["NOTEFLY_DATABASE_URL"] = url
    nodes = dict(_broker(bench, env, f"bench-node-{i + 1}", run.nodes) for i in range(run.nodes))
    log = await PostgresDeliveryLog.open(url)
    try:
        run.stage = "starting the nodes"
        for server, _ in nodes.values():
            server.start()
        await _wait_ready(log, nodes)
        run.stage = "measuring POST /pub"
        run.ingest_rate = await _ingest(
            log, [u for _, u in nodes.values()], bench.sizes.nodes_ingest
        )
        cpu_before = {node: tree_cpu_seconds(s.pid) for node, (s, _) in nodes.items()}
        run.stage = "publishing"
        run.refused = await _publish([u for _, u in nodes.values()], run.messages)
        run.stage = "waiting for the deliveries"
        run.finished, _ = await wait_done(
            log, TIMEOUT_SECONDS, 0.25, category=CATEGORY, expect_messages=run.messages
        )
        run.cpu_seconds = {
            node: round(tree_cpu_seconds(s.pid) - cpu_before[node], 2)
            for node, (s, _) in nodes.items()
        }
        run.stage = "reading the delivery log"
        run.statuses = await log.by_status()
        run.stage = "reading the nodes' /metrics"
        run.sent_by_node = await _counters(nodes, run.statuses.get("sent", 0))
        run.stage = "reading the delivery log"
        run.sent_per_message = await log.sent_per_message(CATEGORY)
        run.repeated_rows = await log.repeated_recipients()
        run.fanned_out_by_node = await log.fanout_owners(CATEGORY)
        span = await log.span(CATEGORY)
        if span is not None:
            run.seconds = (span[1] - span[0]).total_seconds()
    except BaseException:
        run.log_tails = {node: server.log_tail(2000) for node, (server, _) in nodes.items()}
        raise
    finally:
        await log.close()
        codes = await asyncio.gather(*(asyncio.to_thread(s.stop) for s, _ in nodes.values()))
        for node, code in zip(nodes, codes, strict=True):
            if code not in (0, None):
                bench.say(f"  {node} exited with {code}; log in {nodes[node][0].log_path}")
        if not bench.keep:
            await dbs.drop(name)


def _broker(
    bench: Bench, env: Mapping[str, str], node: str, count: int
) -> tuple[str, tuple[Server, str]]:
    data_dir = bench.scratch(f"nodes-{count}-{node}")
    port = free_port()
    argv = [sys.executable, "-m", "notefly", "broker", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--data-dir", str(data_dir)]
    server = Server(node, argv, data_dir / "notefly.log", {**env, "NOTEFLY_NODE_ID": node})
    return node, (server, f"http://127.0.0.1:{port}")


async def _wait_ready(log: PostgresDeliveryLog, nodes: Mapping[str, tuple[Server, str]]) -> None:
    """Until every node heartbeats in the store and answers ``/status`` as itself."""
    deadline = time.monotonic() + START_SECONDS
    ready: set[str] = set()
    while True:
        for node, (server, url) in nodes.items():
            server.check_alive()
            if node in ready:
                continue
            with contextlib.suppress(
                OSError, asyncio.IncompleteReadError, TimeoutError, loadgen.HttpError, ValueError
            ):
                response = await loadgen.get(url, "/status")
                if response.status == 200 and json.loads(response.body).get("node") == node:
                    ready.add(node)
        if ready == set(nodes) and set(nodes) <= await log.nodes():
            return
        if time.monotonic() > deadline:
            waiting = sorted(set(nodes) - ready) or sorted(set(nodes) - await log.nodes())
            tail = nodes[waiting[0]][0].log_tail() if waiting else ""
            raise ServerError(f"nodes not ready within {START_SECONDS:.0f} s: {waiting}\n{tail}")
        await asyncio.sleep(0.1)


def split(count: int, parts: int) -> list[int]:
    """``count`` spread over ``parts`` as evenly as it goes, the larger parts first."""
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def _body(category: str) -> bytes:
    return json.dumps({"category": category, "title": TITLE, "body": BODY}).encode()


async def _ingest(log: PostgresDeliveryLog, urls: Sequence[str], count: int) -> float | None:
    """POST /pub rate of a fixed-count burst over every node, to a category without
    subscribers (closed loop on ``INGEST_CONNECTIONS`` connections in all); then waits
    until those messages are fanned out (to nobody), so the next burst starts clean."""
    body = _body(INGEST_CATEGORY)
    connections = max(1, INGEST_CONNECTIONS // len(urls))

    async def burst(counts: Sequence[int]) -> list[loadgen.Sent]:
        answers = await asyncio.gather(
            *(
                loadgen.paced(
                    url, "/pub", rate=1e9, count=k, body=lambda _: body, connections=connections
                )
                for url, k in zip(urls, counts, strict=True)
            )
        )
        return [a for node in answers for a in node]

    # Not measured: each node's first requests open its store connections.
    warmup = await burst([connections] * len(urls))
    sent = await burst(split(count, len(urls)))
    accepted = sum(a.status == 202 for a in sent)
    await wait_done(
        log,
        30,
        0.1,
        category=INGEST_CATEGORY,
        expect_messages=accepted + sum(a.status == 202 for a in warmup),
    )
    seconds = max(a.answered for a in sent) - min(a.sent for a in sent) if sent else 0.0
    return accepted / seconds if accepted and seconds > 0 else None


async def _publish(urls: Sequence[str], count: int) -> int:
    """``count`` messages at once, spread over the nodes; how many were refused."""
    body = _body(CATEGORY)
    answers = await asyncio.gather(
        *(
            loadgen.burst(url, "/pub", [body] * k)
            for url, k in zip(urls, split(count, len(urls)), strict=True)
            if k
        )
    )
    return sum(a.status != 202 for node in answers for a in node)


async def _counters(nodes: Mapping[str, tuple[Server, str]], sent_rows: int) -> dict[str, int]:
    """Each node's count of deliveries it sent, from its ``/metrics``; read again for a
    few seconds while they add up to fewer than the rows (a counter is bumped just after
    its row is written)."""
    deadline = time.monotonic() + COUNTER_SECONDS
    while True:
        counts = {}
        for node, (_, url) in nodes.items():
            response = await loadgen.get(url, "/metrics", within=30)
            if response.status != 200:
                raise loadgen.HttpError(f"{node} answered /metrics with {response.status}")
            counts[node] = sent_counter(response.body.decode())
        if sum(counts.values()) >= sent_rows or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


def _line(run: NodesRun) -> str:
    if run.error:
        return run.error
    rate = f"{number(run.rate)} deliveries/s" if run.rate is not None else "no rate"
    ingest = number(run.ingest_rate) if run.ingest_rate is not None else "-"
    return (
        f"{rate} in {number(run.seconds or 0)} s, sent by node: {share(run.sent_by_node)},"
        f" POST /pub {ingest} req/s, statuses {run.statuses}"
    )
