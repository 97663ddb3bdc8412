"""Several broker processes, one PROMETHEUS_MULTIPROC_DIR: any scrape sees them all.

Two `notefly broker` processes share one store and one metrics directory, as workers
do. Counters add up across them, per-process gauges add up over the live processes
only, and a worker that stops leaves the live gauges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from notefly.config import Settings
from tests.e2e.conftest import NoteflyProcess, free_port
from tests.e2e.helpers import publish
from tests.integration.opsbroker import parse_metrics, sample

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[list[NoteflyProcess]]:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    brokers = []
    for n in range(2):
        port = free_port()
        brokers.append(
            NoteflyProcess(
                args=["broker", "--port", str(port)],
                data_dir=tmp_path / "data",
                log_path=tmp_path / f"broker-{n}.log",
                urls={"broker": f"http://127.0.0.1:{port}"},
                env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
            )
        )
    yield brokers
    for broker in brokers:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.kill()


def scrape_until(url: str, done: Callable[[Samples], bool], within: float = 20.0) -> Samples:
    deadline = time.monotonic() + within
    while True:
        samples = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, f"metrics never got there: {samples}"
        time.sleep(0.2)


def test_a_scrape_of_one_worker_counts_every_worker(two_brokers: list[NoteflyProcess]):
    first, second = two_brokers
    for broker in two_brokers:
        broker.start()
    with (
        httpx.Client(base_url=first.urls["broker"], timeout=10) as a,
        httpx.Client(base_url=second.urls["broker"], timeout=10) as b,
    ):
        for n in range(2):
            publish(a, "finance", f"from the first worker {n}")
        for n in range(3):
            publish(b, "finance", f"from the second worker {n}")

    def accepted(s: Samples) -> float:
        return sample(s, "notefly_messages_accepted_total", category="finance")

    def shards(s: Samples) -> float:
        return sample(s, "notefly_actor_shards")

    per_worker = 3 * Settings().shards_per_channel  # sms, email and push

    for url in (first.urls["broker"], second.urls["broker"]):
        seen = scrape_until(url, lambda s: accepted(s) == 5 and shards(s) == 2 * per_worker)
        published = sample(
            seen,
            "notefly_http_request_duration_seconds_count",
            service="broker",
            method="POST",
            route="/pub",
            status="202",
        )
        assert published == 5

    # A worker that stops takes its live gauges along; what it counted stays.
    assert second.stop() == 0
    seen = scrape_until(first.urls["broker"], lambda s: shards(s) == per_worker)
    assert accepted(seen) == 5
    assert first.stop() == 0
