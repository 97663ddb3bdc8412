"""The Prometheus observer, the throughput window and provider health, on a fake clock."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from notefly.activity import Throughput
from notefly.logs import LOG_FIELDS, order_fields
from notefly.metrics import Metrics, PrometheusObserver, prepare_multiprocess_dir
from notefly.ports import WriteLockUse


class FakeTime:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by name and labels."""
    body, _content_type = metrics.exposition()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


def test_deliveries_are_counted_by_channel_provider_and_status():
    observer = PrometheusObserver(wall_clock=FakeTime())
    observer.message_accepted("finance")
    observer.delivery_finished("email", "smtp", "sent", 1, 0.02)
    observer.delivery_finished("email", "smtp", "sent", 2, 0.2)
    observer.delivery_retried("email", "smtp", 1)
    observer.delivery_finished("sms", "twilio", "failed", 5, 0.01)
    observer.delivery_finished("push", None, "skipped", 1, None)

    m = observer.metrics
    assert value(m, "notefly_messages_accepted_total", category="finance") == 1
    assert (
        value(m, "notefly_deliveries_total", channel="email", provider="smtp", status="sent") == 2
    )
    assert value(m, "notefly_delivery_retries_total", channel="email", provider="smtp") == 1
    assert value(m, "notefly_dead_letters_total", channel="sms", provider="twilio") == 1
    assert (
        value(m, "notefly_deliveries_total", channel="push", provider="unknown", status="skipped")
        == 1
    )
    # Latency: two observations for email, one between 0.1 and 0.25 s.
    assert value(m, "notefly_provider_latency_seconds_count", channel="email", provider="smtp") == 2
    assert (
        value(
            m, "notefly_provider_latency_seconds_bucket", channel="email", provider="smtp", le="0.1"
        )
        == 1
    )


def test_provider_health_follows_the_outcomes_between_samples():
    observer = PrometheusObserver(wall_clock=FakeTime())
    activity = observer.activity
    observer.register_provider("email", "smtp")
    activity.sample()  # the baseline
    assert [(p.channel, p.provider, p.state) for p in activity.providers()] == [
        ("email", "smtp", "idle")
    ]
    observer.delivery_retried("email", "smtp", 1)
    observer.delivery_finished("email", "smtp", "failed", 2, 0.5)
    activity.sample()
    (health,) = activity.providers()
    assert (health.state, health.failed, health.retried, health.sent) == ("failing", 1, 1, 0)
    assert health.changed_at is not None
    activity.sample()  # nothing happened since: the state stays
    assert activity.providers()[0].state == "failing"
    observer.delivery_finished("email", "smtp", "sent", 1, 0.01)
    observer.delivery_retried("email", "smtp", 1)
    activity.sample()
    assert activity.providers()[0].state == "degraded"
    observer.delivery_finished("email", "smtp", "sent", 1, 0.01)
    # A skipped delivery never reached the provider: it says nothing of its health.
    observer.delivery_finished("email", "smtp", "skipped", 1, None)
    activity.sample()
    (health,) = activity.providers()
    assert (health.state, health.sent) == ("ok", 2)


def test_counters_already_there_at_the_first_sample_are_a_baseline():
    clock = FakeTime()
    observer = PrometheusObserver(wall_clock=clock)
    observer.message_accepted("finance")
    observer.delivery_finished("sms", "log", "sent", 1, 0.01)
    observer.activity.sample()
    assert sum(observer.activity.throughput.series()["channels"]["sms"]) == 0
    assert observer.activity.accepted == 1
    assert observer.activity.providers()[0].state == "ok"


def test_registered_providers_expose_a_closed_circuit_breaker():
    observer = PrometheusObserver(wall_clock=FakeTime())
    observer.register_provider("sms", "log")
    m = observer.metrics
    states = {
        state: value(m, "notefly_circuit_breaker_state", channel="sms", provider="log", state=state)
        for state in ("closed", "open", "half_open")
    }
    assert states == {"closed": 1, "open": 0, "half_open": 0}


def test_actor_stats_become_gauges():
    m = Metrics()
    m.set_actor_stats({"pending": 7, "entities": 3, "shard_actors": 12, "category_actors": 2})
    assert value(m, "notefly_actor_pending_deliveries") == 7
    assert value(m, "notefly_actor_entities") == 3
    assert value(m, "notefly_actor_shards") == 12
    assert value(m, "notefly_actor_categories") == 2


def test_write_lock_use_is_counted_from_what_the_store_added_since_the_last_look():
    m = Metrics()
    m.add_write_lock_use(WriteLockUse(1.0, 2.0, 3))
    m.add_write_lock_use(WriteLockUse(1.5, 2.75, 5))
    m.add_write_lock_use(WriteLockUse(1.5, 2.75, 5))  # nothing new
    assert value(m, "notefly_store_write_lock_wait_seconds_total") == 1.5
    assert value(m, "notefly_store_write_lock_held_seconds_total") == 2.75
    assert value(m, "notefly_store_write_transactions_total") == 5


def test_thread_cpu_is_counted_by_kind_from_what_was_added_since_the_last_look():
    m = Metrics()
    m.add_thread_cpu({"MainThread": 1.5, "shard-sms": 0.0})
    m.add_thread_cpu({"MainThread": 2.0, "shard-sms": 0.25, "sqlite-writer": 0.5})
    m.add_thread_cpu({"MainThread": 2.0, "shard-sms": 0.25, "sqlite-writer": 0.5})  # nothing new
    assert value(m, "notefly_thread_cpu_seconds_total", thread="MainThread") == 2.0
    assert value(m, "notefly_thread_cpu_seconds_total", thread="shard-sms") == 0.25
    assert value(m, "notefly_thread_cpu_seconds_total", thread="sqlite-writer") == 0.5


def test_http_requests_are_timed_by_route_template():
    m = Metrics()
    m.http_request("broker", "GET", "/messages/<message_id>", 200, 0.003)
    m.http_request("broker", "GET", "/messages/<message_id>", 200, 0.004)
    labels = {"service": "broker", "method": "GET", "route": "/messages/<message_id>"}
    assert value(m, "notefly_http_request_duration_seconds_count", **labels, status="200") == 2


def test_two_metrics_sets_in_one_process_do_not_collide():
    # Tests (and an embedded app) build several containers: each has its own registry.
    first, second = Metrics(), Metrics()
    first.messages_accepted.labels("finance").inc()
    assert value(first, "notefly_messages_accepted_total", category="finance") == 1
    assert value(second, "notefly_messages_accepted_total", category="finance") == 0


def test_throughput_counts_per_bucket_and_slides():
    clock = FakeTime(1000.0)
    t = Throughput(clock, bucket_seconds=5, window_seconds=30)
    t.known("sms")
    t.add("email")
    t.add("email")
    clock.now += 5
    t.add("email")
    series = t.series()
    assert series["bucket_seconds"] == 5
    assert series["channels"]["email"] == [0, 0, 0, 0, 2, 1]
    assert series["channels"]["sms"] == [0] * 6
    clock.now += 25  # the first bucket leaves the window
    assert t.series()["channels"]["email"] == [1, 0, 0, 0, 0, 0]
    clock.now += 5
    assert t.series()["channels"]["email"] == [0] * 6


def test_throughput_forgets_buckets_older_than_the_window():
    clock = FakeTime(0.0)
    t = Throughput(clock, bucket_seconds=1, window_seconds=10)
    for _ in range(100):
        t.add("sms")
        clock.now += 1
    assert sum(t.series()["channels"]["sms"]) == 9  # the current bucket is still empty
    assert len(t._counts["sms"]) <= 11  # bounded memory


def test_the_throughput_counts_final_deliveries_per_bucket():
    clock = FakeTime(1000.0)
    observer = PrometheusObserver(wall_clock=clock, bucket_seconds=5, window_seconds=60)
    observer.activity.sample()
    observer.delivery_finished("email", "log", "sent", 1, 0.01)
    observer.delivery_finished("email", "log", "failed", 1, 0.01)
    observer.delivery_retried("email", "log", 1)
    observer.delivery_finished("email", "log", "skipped", 1, None)
    observer.activity.sample()
    clock.now += 5
    observer.delivery_finished("email", "log", "sent", 1, 0.01)
    observer.activity.sample()
    assert observer.activity.throughput.series()["channels"]["email"][-2:] == [2, 1]


def test_actor_gauges_of_every_worker_are_read_back():
    observer = PrometheusObserver(wall_clock=FakeTime())
    observer.metrics.set_actor_stats({"pending": 4, "entities": 2, "shard_actors": 8})
    observer.activity.sample()
    assert observer.activity.gauges() == {"pending": 4, "entities": 2, "shard_actors": 8}


def test_log_lines_put_the_documented_fields_first():
    event = {
        "text": "hi",
        "attempt": 1,
        "event": "delivery.sent",
        "channel": "sms",
        "level": "info",
    }
    ordered = list(order_fields(None, "info", event))
    assert ordered == ["level", "event", "channel", "attempt", "text"]
    assert LOG_FIELDS[:3] == ("timestamp", "level", "event")


def test_a_multiprocess_directory_is_emptied_of_an_earlier_run(tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old")
    (folder / "README").write_text("kept")
    assert prepare_multiprocess_dir(folder) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["README"]
    assert prepare_multiprocess_dir(tmp_path / "new").is_dir()
