"""A circuit breaker per provider: a provider that keeps failing is left alone for a while.

Each channel provider of a process sends through a ``BreakerChannel``, which asks its
``CircuitBreaker`` before every call:

- **closed**: calls go through. ``failures`` consecutive calls that fail *because of the
  provider* open the circuit.
- **open**: no call goes through for the cool-down. A delivery that meets an open circuit
  gets ``CircuitOpen`` (retry after what is left of the cool-down): it was not sent, so
  it is not an attempt and not a failure, and it keeps its place in its user's queue.
  Each re-open after a failed probe doubles the cool-down, up to ``max_cooldown_seconds``.
- **half-open**: once the cool-down has passed, exactly one call (the probe) goes
  through; the others wait a little. The probe's success closes the circuit, its
  failure opens it again.

What counts as a failure of the provider: a ``TransientChannelError`` (timeouts, 429,
5xx, refused connections), any unexpected exception, a call cancelled (the shard's send
timeout), and a ``PermanentChannelError`` raised with ``provider_fault=True`` (rejected
credentials, a suspended account). Not counted: other permanent errors, which concern one
recipient or one payload (an invalid address, a 4xx "bad recipient", a target that is
gone). They neither open nor close the circuit and leave the count of consecutive
failures as it was; a probe that ends that way gives the probe to the next call.

Results of calls that began before the last change of state (the rest of a round
already in flight when the circuit opened) change nothing: only calls let through in the
current state decide the next one.

Sends run on the event loop, while health checks and metrics may read from other
threads: every breaker guards its state with a lock, and logs and notifies outside it.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from notefly.config import Settings
from notefly.domain import Rendered
from notefly.errors import CircuitOpen, ConfigurationError, PermanentChannelError
from notefly.ports import Channel, SendResult

log = structlog.get_logger("notefly.breaker")

MIN_WAIT_SECONDS = 0.01  # the shortest wait a CircuitOpen asks for
PROBE_WAIT_SECONDS = 1.0  # how long calls wait while a probe is out (at most the cool-down)


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Verdict(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"  # the provider's fault: counts
    NEUTRAL = "neutral"  # about one recipient or payload: does not count


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int = 5  # consecutive failures that open the circuit
    cooldown_seconds: float = 30.0  # the first cool-down
    max_cooldown_seconds: float = 300.0  # cap of the cool-down as re-opens double it

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ConfigurationError("NOTEFLY_BREAKER_FAILURES must be at least 1")
        if self.cooldown_seconds <= 0:
            raise ConfigurationError("NOTEFLY_BREAKER_COOLDOWN_SECONDS must be positive")
        if self.max_cooldown_seconds < self.cooldown_seconds:
            raise ConfigurationError(
                "NOTEFLY_BREAKER_MAX_COOLDOWN_SECONDS must be at least"
                " NOTEFLY_BREAKER_COOLDOWN_SECONDS"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerSettings:
        return cls(
            failures=settings.breaker_failures,
            cooldown_seconds=settings.breaker_cooldown_seconds,
            max_cooldown_seconds=settings.breaker_max_cooldown_seconds,
        )

    @property
    def probe_wait_seconds(self) -> float:
        return min(PROBE_WAIT_SECONDS, self.cooldown_seconds)


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """What health output shows of one breaker."""

    channel: str
    provider: str
    state: str
    consecutive_failures: int
    cooldown_seconds: float | None  # of the current or last opening
    retry_in_seconds: float | None  # until a probe may go out (open only)
    opened: int  # times the circuit opened since start
    last_failure: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "provider": self.provider,
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "cooldown_seconds": self.cooldown_seconds,
            "retry_in_seconds": self.retry_in_seconds,
            "opened": self.opened,
            "last_failure": self.last_failure,
        }


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call: which state let it through."""

    generation: int
    probe: bool


OnChange = Callable[[CircuitSnapshot], None]


def verdict(error: BaseException | None) -> Verdict:
    """How a call that ended with ``error`` (``None``: success) counts."""
    if error is None:
        return Verdict.SUCCESS
    if isinstance(error, PermanentChannelError):
        return Verdict.FAILURE if error.provider_fault else Verdict.NEUTRAL
    if isinstance(error, Exception | asyncio.CancelledError):
        return Verdict.FAILURE
    return Verdict.NEUTRAL  # KeyboardInterrupt and the like say nothing of the provider


class CircuitBreaker:
    def __init__(
        self,
        channel: str,
        provider: str,
        settings: BreakerSettings,
        monotonic: Callable[[], float],
        on_change: OnChange | None = None,
    ) -> None:
        self.channel = channel
        self.provider = provider
        self._settings = settings
        self._monotonic = monotonic
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._generation = 0
        self._failures = 0
        self._reopens = 0  # failed probes in a row: each doubles the cool-down
        self._cooldown: float | None = None
        self._opened_at = 0.0
        self._probe_out = False
        self._opened = 0
        self._last_failure: str | None = None
        self._closed_permit = Permit(self._generation, probe=False)

    @property
    def state(self) -> State:
        with self._lock:
            changed = self._refresh()
            state = self._state
        self._announce(changed)
        return state

    def acquire(self) -> Permit:
        """Leave for one call, or ``CircuitOpen`` with how long to wait."""
        if self._state is State.CLOSED:
            # Every send passes here: no lock while closed. A change racing with this
            # read lets one call of the closed generation through, whose result is
            # then ignored (see ``_settle``).
            return self._closed_permit
        with self._lock:
            changed = self._refresh()
            permit, wait = self._admit()
            state, last = self._state, self._last_failure
        self._announce(changed)
        if permit is not None:
            return permit
        why = "is open" if state is State.OPEN else "is half-open, its probe is out"
        raise CircuitOpen(
            f"not sent: the circuit of {self.channel}/{self.provider} {why}"
            + (f" (last failure: {last})" if last else "")
            + f"; next try in {wait:.1f}s",
            retry_after=wait,
            channel=self.channel,
            provider=self.provider,
        )

    def record(self, permit: Permit, result: Verdict, reason: str | None = None) -> None:
        """The end of a call that ``permit`` let through."""
        if (
            result is Verdict.SUCCESS
            and self._failures == 0
            and permit.generation == self._generation
            and not permit.probe
        ):
            return  # closed, with no failure to forget: nothing changes
        with self._lock:
            changed = self._settle(permit, result, reason)
        self._announce(changed)

    def snapshot(self) -> CircuitSnapshot:
        with self._lock:
            changed = self._refresh()
            found = self._snapshot()
        self._announce(changed)
        return found

    # -- under the lock -------------------------------------------------------------

    def _admit(self) -> tuple[Permit | None, float]:
        if self._state is State.CLOSED:
            return self._closed_permit, 0.0
        if self._state is State.OPEN:
            return None, max(self._remaining(), MIN_WAIT_SECONDS)
        if self._probe_out:
            return None, self._settings.probe_wait_seconds
        self._probe_out = True
        return Permit(self._generation, probe=True), 0.0

    def _settle(self, permit: Permit, result: Verdict, reason: str | None) -> _Change | None:
        if permit.generation != self._generation:
            return None  # let through before the last change: it proves nothing now
        if result is Verdict.FAILURE:
            self._last_failure = reason
        if self._state is State.CLOSED:
            if result is Verdict.SUCCESS:
                self._failures = 0
            elif result is Verdict.FAILURE:
                self._failures += 1
                if self._failures >= self._settings.failures:
                    return self._open()
            return None
        if not permit.probe:
            return None
        # Half-open, and this was the probe.
        self._probe_out = False
        if result is Verdict.SUCCESS:
            return self._close()
        if result is Verdict.FAILURE:
            self._failures += 1
            self._reopens += 1
            return self._open()
        return None  # neutral: the next call probes

    def _refresh(self) -> _Change | None:
        if self._state is State.OPEN and self._remaining() <= 0:
            return self._move(State.HALF_OPEN)
        return None

    def _open(self) -> _Change:
        cooldown = self._settings.cooldown_seconds * 2 ** min(self._reopens, 30)
        self._cooldown = min(cooldown, self._settings.max_cooldown_seconds)
        self._opened_at = self._monotonic()
        self._opened += 1
        return self._move(State.OPEN)

    def _close(self) -> _Change:
        self._failures = 0
        self._reopens = 0
        return self._move(State.CLOSED)

    def _move(self, state: State) -> _Change:
        before = self._state
        self._state = state
        self._generation += 1
        self._probe_out = False
        if state is State.CLOSED:  # a permit of an earlier generation is ignored
            self._closed_permit = Permit(self._generation, probe=False)
        return _Change(before, state, self._snapshot())

    def _remaining(self) -> float:
        return self._opened_at + (self._cooldown or 0.0) - self._monotonic()

    def _snapshot(self) -> CircuitSnapshot:
        retry_in = round(max(self._remaining(), 0.0), 3) if self._state is State.OPEN else None
        return CircuitSnapshot(
            channel=self.channel,
            provider=self.provider,
            state=self._state.value,
            consecutive_failures=self._failures,
            cooldown_seconds=self._cooldown,
            retry_in_seconds=retry_in,
            opened=self._opened,
            last_failure=self._last_failure,
        )

    # -- outside the lock -----------------------------------------------------------

    def _announce(self, change: _Change | None) -> None:
        if change is None:
            return
        found = change.snapshot
        fields = {
            "channel": self.channel,
            "provider": self.provider,
            "consecutive_failures": found.consecutive_failures,
            "cooldown_seconds": found.cooldown_seconds,
        }
        if change.state_after is State.OPEN:
            log.warning(
                "breaker.opened", previous=change.before.value, error=found.last_failure, **fields
            )
        elif change.state_after is State.HALF_OPEN:
            log.info("breaker.half_open", **fields)
        else:
            log.info("breaker.closed", **fields)
        if self._on_change is not None:
            try:
                self._on_change(found)
            except Exception:  # metrics must never stop a send
                log.exception("breaker.listener_failed", channel=self.channel)


@dataclass(frozen=True, slots=True)
class _Change:
    before: State
    state_after: State
    snapshot: CircuitSnapshot


class BreakerChannel:
    """A ``Channel`` that sends through its provider's circuit breaker."""

    def __init__(self, inner: Channel, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.name = inner.name
        self.provider = inner.provider
        # The breaker's own work never waits, so it keeps the promise of what it wraps.
        self.immediate = bool(getattr(inner, "immediate", False))
        self.closing = False  # the node is stopping: what fails now says nothing

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        permit = self.breaker.acquire()  # CircuitOpen: the provider is not called
        try:
            result = await self.inner.send(rendered, delivery_id=delivery_id)
        except BaseException as exc:
            # Every way out releases the permit: a probe that never reported back would
            # hold the circuit half-open for good.
            # Sends cut short by the node's own shutdown (cancelled, or their client
            # closed under them) are not the provider's fault.
            counted = Verdict.NEUTRAL if self.closing else verdict(exc)
            self.breaker.record(permit, counted, _reason(exc))
            raise
        self.breaker.record(permit, Verdict.SUCCESS)
        return result

    def stand_down(self) -> None:
        """The node is stopping: failures from here on do not count against the provider."""
        self.closing = True

    async def aclose(self) -> None:
        self.closing = True
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()


class Breakers:
    """The circuit breakers of one process, one per (channel, provider)."""

    def __init__(
        self,
        settings: BreakerSettings,
        monotonic: Callable[[], float],
        on_change: OnChange | None = None,
    ) -> None:
        self._settings = settings
        self._monotonic = monotonic
        self._on_change = on_change
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def breaker(self, channel: str, provider: str) -> CircuitBreaker:
        with self._lock:
            found = self._breakers.get((channel, provider))
            if found is None:
                found = self._breakers[(channel, provider)] = CircuitBreaker(
                    channel, provider, self._settings, self._monotonic, self._on_change
                )
            return found

    def guard(self, channels: Mapping[str, Channel]) -> dict[str, Channel]:
        """The same channels, each sending through its breaker."""
        return {
            key: BreakerChannel(channel, self.breaker(channel.name, channel.provider))
            for key, channel in channels.items()
        }

    def state(self, channel: str, provider: str) -> str:
        with self._lock:
            found = self._breakers.get((channel, provider))
        return found.state.value if found is not None else State.CLOSED.value

    def snapshot(self) -> list[CircuitSnapshot]:
        with self._lock:
            breakers = sorted(self._breakers.items())
        return [breaker.snapshot() for _key, breaker in breakers]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "the call was cancelled (send timeout)"
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else f"{type(exc).__name__}: {exc}"
