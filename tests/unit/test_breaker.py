"""The circuit breaker's state machine, on a fake clock and fake providers."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from notefly.breaker import (
    BreakerChannel,
    Breakers,
    BreakerSettings,
    CircuitBreaker,
    CircuitSnapshot,
    State,
    Verdict,
    verdict,
)
from notefly.config import Settings
from notefly.domain import Rendered
from notefly.errors import (
    CircuitOpen,
    ConfigurationError,
    PermanentChannelError,
    TransientChannelError,
)
from notefly.health import readiness
from notefly.metrics import PrometheusObserver
from notefly.ports import SendResult

SETTINGS = BreakerSettings(failures=3, cooldown_seconds=10.0, max_cooldown_seconds=35.0)
RENDERED = Rendered(channel="sms", to="+14155550100", text="hello")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedChannel:
    """A provider that raises what the test queues, else sends; records every call."""

    name = "sms"
    provider = "scripted"

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.closed = False

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        self.calls.append(delivery_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return SendResult(self.provider, f"id-{delivery_id}")

    async def aclose(self) -> None:
        self.closed = True


def breaker(clock: FakeClock, changes: list[CircuitSnapshot] | None = None) -> CircuitBreaker:
    on_change = changes.append if changes is not None else None
    return CircuitBreaker("sms", "scripted", SETTINGS, clock, on_change)


def fail(b: CircuitBreaker, times: int = 1, reason: str = "503") -> None:
    for _ in range(times):
        b.record(b.acquire(), Verdict.FAILURE, reason)


def test_it_opens_after_n_consecutive_failures_and_not_before() -> None:
    clock = FakeClock()
    changes: list[CircuitSnapshot] = []
    b = breaker(clock, changes)
    fail(b, 2)
    assert b.snapshot().state == "closed"
    b.record(b.acquire(), Verdict.SUCCESS)  # a success in between starts the count again
    fail(b, 2)
    assert b.snapshot().state == "closed"
    with capture_logs() as logs:
        fail(b, reason="smtp: 421 busy")
    assert b.snapshot().state == "open"
    assert [c.state for c in changes] == ["open"]
    (opened,) = [e for e in logs if e["event"] == "breaker.opened"]
    assert opened["channel"] == "sms" and opened["provider"] == "scripted"
    assert opened["consecutive_failures"] == 3 and opened["cooldown_seconds"] == 10.0
    assert opened["error"] == "smtp: 421 busy" and opened["log_level"] == "warning"


def test_an_open_circuit_refuses_with_the_remaining_cooldown() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(4)
    with pytest.raises(CircuitOpen) as caught:
        b.acquire()
    assert caught.value.retry_after == pytest.approx(6.0)
    assert isinstance(caught.value, TransientChannelError) and caught.value.attempted is False
    assert "sms/scripted" in caught.value.message and "503" in caught.value.message
    snapshot = b.snapshot()
    assert (snapshot.state, snapshot.retry_in_seconds, snapshot.opened) == ("open", 6.0, 1)


def test_after_the_cooldown_exactly_one_probe_goes_out_and_its_success_closes() -> None:
    clock = FakeClock()
    changes: list[CircuitSnapshot] = []
    b = breaker(clock, changes)
    fail(b, 3)
    clock.advance(10)
    with capture_logs() as logs:
        probe = b.acquire()
    assert probe.probe and b.state is State.HALF_OPEN
    assert [e["event"] for e in logs] == ["breaker.half_open"]
    for _ in range(3):  # everyone else waits while the probe is out
        with pytest.raises(CircuitOpen) as caught:
            b.acquire()
        assert caught.value.retry_after == 1.0
        assert "probe" in caught.value.message
    with capture_logs() as logs:
        b.record(probe, Verdict.SUCCESS)
    assert (b.snapshot().state, b.snapshot().consecutive_failures) == ("closed", 0)
    assert [e["event"] for e in logs] == ["breaker.closed"]
    assert [c.state for c in changes] == ["open", "half_open", "closed"]
    assert not b.acquire().probe


def test_a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_cap() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    cooldowns = [b.snapshot().cooldown_seconds]
    for _ in range(3):
        clock.advance(cooldowns[-1] or 0)
        probe = b.acquire()
        assert probe.probe
        b.record(probe, Verdict.FAILURE, "still down")
        assert b.snapshot().state == "open"
        cooldowns.append(b.snapshot().cooldown_seconds)
    assert cooldowns == [10.0, 20.0, 35.0, 35.0]
    clock.advance(35)
    b.record(b.acquire(), Verdict.SUCCESS)
    fail(b, 3)  # after closing, the next opening starts from the first cool-down again
    assert b.snapshot().cooldown_seconds == 10.0 and b.snapshot().opened == 5


def test_neutral_results_neither_count_nor_reset_and_a_neutral_probe_passes_the_probe_on() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 2)
    b.record(b.acquire(), Verdict.NEUTRAL)  # a bad address says nothing of the provider
    assert b.snapshot().consecutive_failures == 2
    fail(b)
    assert b.snapshot().state == "open"
    clock.advance(10)
    first = b.acquire()
    b.record(first, Verdict.NEUTRAL)
    assert b.snapshot().state == "half_open"
    second = b.acquire()  # the probe slot is free again
    assert second.probe
    b.record(second, Verdict.SUCCESS)
    assert b.snapshot().state == "closed"


def test_results_of_calls_let_through_before_a_change_are_ignored() -> None:
    clock = FakeClock()
    b = breaker(clock)
    in_flight = [b.acquire() for _ in range(5)]  # a whole round started while closed
    for permit in in_flight[:3]:
        b.record(permit, Verdict.FAILURE, "503")
    assert b.snapshot().state == "open"
    b.record(in_flight[3], Verdict.FAILURE, "503")  # does not extend the opening
    b.record(in_flight[4], Verdict.SUCCESS)  # and does not close it either
    snapshot = b.snapshot()
    assert (snapshot.state, snapshot.opened, snapshot.cooldown_seconds) == ("open", 1, 10.0)
    clock.advance(10)
    b.record(b.acquire(), Verdict.SUCCESS)  # the probe closes it
    late = in_flight[0]
    for _ in range(3):  # a closed period of long ago counts for nothing in this one
        b.record(late, Verdict.FAILURE, "503")
    assert (b.snapshot().state, b.snapshot().consecutive_failures) == ("closed", 0)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, Verdict.SUCCESS),
        (TransientChannelError("503 Service Unavailable"), Verdict.FAILURE),
        (TimeoutError(), Verdict.FAILURE),
        (RuntimeError("bug in the provider"), Verdict.FAILURE),
        (asyncio.CancelledError(), Verdict.FAILURE),
        (PermanentChannelError("twilio: '+1' is not an E.164 number"), Verdict.NEUTRAL),
        (PermanentChannelError("401 bad credentials", provider_fault=True), Verdict.FAILURE),
        (KeyboardInterrupt(), Verdict.NEUTRAL),
    ],
)
def test_what_counts_against_the_provider(error: BaseException | None, expected: Verdict) -> None:
    assert verdict(error) is expected


def test_settings_are_checked_and_read_from_the_environment() -> None:
    env = {
        "NOTEFLY_BREAKER_FAILURES": "7",
        "NOTEFLY_BREAKER_COOLDOWN_SECONDS": "2.5",
        "NOTEFLY_BREAKER_MAX_COOLDOWN_SECONDS": "60",
    }
    found = BreakerSettings.from_settings(Settings.from_env(env))
    assert found == BreakerSettings(failures=7, cooldown_seconds=2.5, max_cooldown_seconds=60.0)
    assert BreakerSettings.from_settings(Settings()) == BreakerSettings(5, 30.0, 300.0)
    with pytest.raises(ConfigurationError, match="NOTEFLY_BREAKER_FAILURES"):
        Settings.from_env({"NOTEFLY_BREAKER_FAILURES": "0"})
    with pytest.raises(ConfigurationError, match="COOLDOWN_SECONDS must be positive"):
        BreakerSettings(cooldown_seconds=0)
    with pytest.raises(ConfigurationError, match="MAX_COOLDOWN"):
        BreakerSettings(cooldown_seconds=30, max_cooldown_seconds=10)


async def test_the_channel_wrapper_holds_calls_back_while_open_and_probes_once() -> None:
    clock = FakeClock()
    inner = ScriptedChannel()
    breakers = Breakers(SETTINGS, clock)
    (channel,) = breakers.guard({"sms": inner}).values()
    assert (channel.name, channel.provider) == ("sms", "scripted")
    inner.errors = [TransientChannelError("503") for _ in range(3)]
    for n in range(3):
        with pytest.raises(TransientChannelError):
            await channel.send(RENDERED, delivery_id=f"d{n}")
    with pytest.raises(CircuitOpen):
        await channel.send(RENDERED, delivery_id="held")
    assert inner.calls == ["d0", "d1", "d2"]  # the held one never reached the provider
    assert breakers.state("sms", "scripted") == "open"

    clock.advance(10)
    inner.gate = asyncio.Event()
    probe = asyncio.create_task(channel.send(RENDERED, delivery_id="probe"))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):
        await channel.send(RENDERED, delivery_id="meanwhile")
    inner.gate.set()
    assert (await probe).provider_message_id == "id-probe"
    assert (await channel.send(RENDERED, delivery_id="after")).provider_message_id == "id-after"
    assert inner.calls == ["d0", "d1", "d2", "probe", "after"]
    assert [s.state for s in breakers.snapshot()] == ["closed"]


async def test_a_probe_cut_by_the_send_timeout_reopens_instead_of_sticking() -> None:
    clock = FakeClock()
    inner = ScriptedChannel()
    breakers = Breakers(SETTINGS, clock)
    channel = BreakerChannel(inner, breakers.breaker("sms", "scripted"))
    inner.errors = [TransientChannelError("503") for _ in range(3)]
    for n in range(3):
        with pytest.raises(TransientChannelError):
            await channel.send(RENDERED, delivery_id=f"d{n}")
    clock.advance(10)
    inner.gate = asyncio.Event()  # the provider hangs
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await channel.send(RENDERED, delivery_id="probe")
    snapshot = breakers.snapshot()[0]
    assert snapshot.state == "open" and snapshot.cooldown_seconds == 20.0
    assert snapshot.last_failure == "the call was cancelled (send timeout)"
    await channel.aclose()
    assert inner.closed


async def test_bad_recipients_never_open_the_circuit() -> None:
    clock = FakeClock()
    inner = ScriptedChannel()
    channel = BreakerChannel(inner, CircuitBreaker("sms", "scripted", SETTINGS, clock))
    inner.errors = [PermanentChannelError("unknown number") for _ in range(10)]
    for n in range(10):
        with pytest.raises(PermanentChannelError):
            await channel.send(RENDERED, delivery_id=f"d{n}")
    assert channel.breaker.state is State.CLOSED
    assert len(inner.calls) == 10


async def test_sends_cut_short_by_our_own_shutdown_do_not_open_the_circuit() -> None:
    clock = FakeClock()
    inner = ScriptedChannel()
    channel = BreakerChannel(inner, CircuitBreaker("sms", "scripted", SETTINGS, clock))
    inner.gate = asyncio.Event()  # sends hang until the node stops under them
    sends = [asyncio.create_task(channel.send(RENDERED, delivery_id=f"d{n}")) for n in range(5)]
    await asyncio.sleep(0)
    channel.stand_down()
    for send in sends:
        send.cancel()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    inner.errors = [TransientChannelError("connection closed") for _ in range(5)]
    inner.gate.set()
    for n in range(5):  # the client closed under the last sends
        with pytest.raises(TransientChannelError):
            await channel.send(RENDERED, delivery_id=f"late{n}")
    assert channel.breaker.state is State.CLOSED


def test_a_listener_that_raises_does_not_break_the_breaker() -> None:
    clock = FakeClock()

    def broken(_snapshot: CircuitSnapshot) -> None:
        raise RuntimeError("metrics down")

    b = CircuitBreaker("sms", "scripted", SETTINGS, clock, broken)
    with capture_logs() as logs:
        fail(b, 3)
    assert b.snapshot().state == "open"
    assert "breaker.listener_failed" in [e["event"] for e in logs]


def test_the_metrics_follow_every_change_of_state() -> None:
    clock = FakeClock()
    observer = PrometheusObserver()
    observer.register_provider("sms", "scripted")
    b = CircuitBreaker("sms", "scripted", SETTINGS, clock, observer.breaker_changed)

    def states() -> dict[str, float]:
        registry = observer.metrics.registry
        return {
            s: registry.get_sample_value(
                "notefly_circuit_breaker_state",
                {"channel": "sms", "provider": "scripted", "state": s},
            )
            or 0.0
            for s in ("closed", "open", "half_open")
        }

    assert states() == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    fail(b, 3)
    assert states() == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    clock.advance(10)
    probe = b.acquire()
    assert states() == {"closed": 0.0, "open": 0.0, "half_open": 1.0}
    b.record(probe, Verdict.SUCCESS)
    assert states() == {"closed": 1.0, "open": 0.0, "half_open": 0.0}


async def test_readiness_stays_ready_but_degraded_while_a_circuit_is_open() -> None:
    clock = FakeClock()
    breakers = Breakers(SETTINGS, clock)
    fail(breakers.breaker("sms", "scripted"), 3)
    breakers.breaker("email", "smtp")

    class Store:
        async def ping(self) -> None:
            pass

        async def applied_migrations(self) -> list[int]:
            return [1]

    ready = await readiness(Store(), expected=[1], circuits=breakers.snapshot())
    body = ready.to_dict()
    assert ready.ok and body["ready"] is True and body["status"] == "degraded"
    assert [(c["channel"], c["state"]) for c in body["circuits"]] == [
        ("email", "closed"),
        ("sms", "open"),
    ]
    assert body["circuits"][1]["retry_in_seconds"] == 10.0
    clock.advance(10)
    after = (await readiness(Store(), expected=[1], circuits=breakers.snapshot())).to_dict()
    assert after["status"] == "degraded" and after["circuits"][1]["state"] == "half_open"
    without = (await readiness(Store(), expected=[1])).to_dict()
    assert "circuits" not in without and "status" not in without  # the client's shape
