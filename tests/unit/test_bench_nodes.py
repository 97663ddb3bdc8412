"""The nodes scenario's judgement: counters read from /metrics, the exactly-once check,
the rows of the report, and a clear FAIL when PostgreSQL cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from notefly.bench.harness import QUICK, Bench
from notefly.bench.pglog import URL_VARIABLE, server_label
from notefly.bench.procs import free_port
from notefly.bench.report import FAIL, INFO, PASS
from notefly.bench.scenarios.nodes import (
    ONCE,
    NodesRun,
    off_by,
    problems,
    rows,
    run,
    sent_counter,
    share,
    sharing,
    split,
)
from notefly.metrics import Metrics

SHARED = sharing("127.0.0.1", 2)


def finished(nodes: int, *, messages: int = 6, per_message: int = 100, seconds: float = 2.0):
    """A run in which every delivery was sent once, shared evenly by the nodes."""
    names = [f"bench-node-{i + 1}" for i in range(nodes)]
    total = messages * per_message
    return NodesRun(
        nodes,
        messages,
        per_message,
        finished=True,
        seconds=seconds,
        statuses={"sent": total},
        sent_per_message={f"msg_{i}": per_message for i in range(messages)},
        sent_by_node=dict.fromkeys(names, total // nodes),
        fanned_out_by_node=dict.fromkeys(names, messages // nodes),
        ingest_rate=300.0,
        cpu_seconds=dict.fromkeys(names, 0.1),
    )


def test_sent_counter_adds_up_every_channel_and_ignores_other_outcomes():
    metrics = Metrics()
    metrics.deliveries.labels("sms", "log", "sent").inc(3)
    metrics.deliveries.labels("email", "smtp", "sent").inc(4)
    metrics.deliveries.labels("email", "smtp", "failed").inc(5)
    metrics.retries.labels("sms", "log").inc(7)
    text = metrics.exposition()[0].decode()
    assert sent_counter(text) == 7


def test_sent_counter_of_a_node_that_sent_nothing_is_zero():
    assert sent_counter(Metrics().exposition()[0].decode()) == 0


def test_a_clean_run_has_no_problem():
    clean = finished(3)
    assert problems(clean) == []
    assert off_by(clean) == 0


def test_a_delivery_sent_by_two_nodes_is_counted_against_the_run():
    doubled = finished(2)
    doubled.sent_by_node["bench-node-2"] += 2  # two sends the rows record once
    assert off_by(doubled) == 2
    assert any("counted 602 sent" in p for p in problems(doubled))


def test_missing_and_unfinished_deliveries_are_counted_against_the_run():
    short = finished(1)
    short.finished = False
    short.statuses = {"sent": 590, "queued": 10}
    short.sent_by_node = {"bench-node-1": 590}
    short.sent_per_message["msg_0"] = 90
    assert off_by(short) == 10
    found = problems(short)
    assert any("not finished" in p for p in found)
    assert any("1 messages with other than 100 sent" in p for p in found)
    assert any("'queued': 10" in p for p in found)


def test_rows_report_rates_ratios_and_a_passed_check():
    runs = [finished(1, seconds=4.0), finished(2, seconds=2.0), finished(3, seconds=1.6)]
    report = {row.measure: row for row in rows(runs, subscribers=50, shared=SHARED)}
    one = report["deliveries/s, 1 node (PostgreSQL)"]
    assert one.value == pytest.approx(150.0)
    assert one.verdict == INFO
    assert "bench-node-1 100%" in one.detail
    three = report["deliveries/s, 3 nodes (PostgreSQL)"]
    assert "bench-node-1 33% / bench-node-2 33% / bench-node-3 33%" in three.detail
    assert report["deliveries/s, 2 nodes / 1 node"].value == pytest.approx(2.0)
    assert report["deliveries/s, 3 nodes / 1 node"].value == pytest.approx(2.5)
    assert SHARED in report["deliveries/s, 3 nodes / 1 node"].detail
    assert "300 / 300 / 300 req/s" in report["POST /pub rate, 1 / 2 / 3 nodes"].result
    check = report[ONCE[0]]
    assert (check.value, check.verdict) == (0, PASS)


def test_a_repeated_delivery_fails_the_check_with_its_count():
    runs = [finished(1), finished(2), finished(3)]
    runs[2].sent_by_node["bench-node-3"] += 1
    check = {row.measure: row for row in rows(runs, subscribers=50, shared=SHARED)}[ONCE[0]]
    assert (check.value, check.verdict) == (1, FAIL)
    assert "3 nodes" in check.detail


def test_a_run_that_broke_fails_the_check_and_names_the_reason():
    runs = [finished(1), NodesRun(2, 6, 100, error="error: ServerError('node died')")]
    report = {row.measure: row for row in rows(runs, subscribers=50, shared=SHARED)}
    assert report["deliveries/s, 2 nodes (PostgreSQL)"].value is None
    assert report["deliveries/s, 2 nodes / 1 node"].result == "not measured: a rate is missing"
    check = report[ONCE[0]]
    assert check.verdict == FAIL
    assert "2 nodes: error: ServerError('node died')" in check.reason


def test_a_local_postgresql_shares_the_cores_of_the_nodes():
    assert sharing("127.0.0.1", 2) == "one machine: the nodes and PostgreSQL share its 2 cores"
    assert sharing("db.example.org", 4) == "one machine: the nodes share its 4 cores"


def test_share_and_split():
    assert share({"b": 1, "a": 3}) == "a 75% / b 25%"
    assert share({}) == "none"
    assert split(7, 3) == [3, 2, 2]
    assert split(6, 3) == [2, 2, 2]
    assert split(1, 2) == [1, 0]


async def test_an_unreachable_server_is_a_clear_fail(tmp_path: Path, monkeypatch):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens
    monkeypatch.setenv(URL_VARIABLE, url)
    bench = Bench(sizes=QUICK, workers=1, workdir=tmp_path, env={}, wrk=None, say=print)
    result = await run(bench)
    [row] = result.rows
    assert row.verdict == FAIL
    assert row.measure == ONCE[0]
    assert f"not reachable at {server_label(url)}" in row.reason
    assert URL_VARIABLE in row.reason
