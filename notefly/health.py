"""Readiness: is this process able to do its work right now?

``/healthz`` answers "the process is alive" and stays cheap; ``/readyz`` runs these
checks: the store answers, every schema migration this build knows is applied, and
(on the broker) the actor system is running. Orchestrators route traffic only to a
ready process and restart one that stops being alive.

On the broker, readiness also lists the circuit breaker of every provider. An open
circuit makes the node ``degraded``, not unready: a provider's outage is the same for
every node, so taking this one out of a load balancer would help nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from notefly.breaker import CircuitSnapshot
from notefly.store.migrations import load_migrations


class HealthStore(Protocol):
    async def ping(self) -> None: ...
    async def applied_migrations(self) -> list[int]: ...


class ActorStats(Protocol):
    def stats(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: tuple[Check, ...]
    actor_stats: dict[str, Any] | None = field(default=None, compare=False)
    circuits: tuple[CircuitSnapshot, ...] | None = None  # the broker's providers

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def degraded(self) -> bool:
        """Ready, but some provider's circuit is not closed."""
        return any(c.state != "closed" for c in self.circuits or ())

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "ready": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }
        if self.circuits is not None:
            status = "degraded" if self.degraded else "ok"
            found["status"] = status if self.ok else "not_ready"
            found["circuits"] = [c.to_dict() for c in self.circuits]
        return found


def known_migrations(backend: str) -> list[int]:
    """The migration versions this build ships for a store backend (sqlite, postgres)."""
    return [m.version for m in load_migrations(backend)]


async def check_store(store: HealthStore, within: float) -> Check:
    try:
        async with asyncio.timeout(within):
            await store.ping()
    except Exception as exc:
        return Check("store", False, f"the store does not answer: {_reason(exc)}")
    return Check("store", True, "reachable")


async def check_migrations(store: HealthStore, expected: Sequence[int], within: float) -> Check:
    try:
        async with asyncio.timeout(within):
            applied = set(await store.applied_migrations())
    except Exception as exc:
        return Check("migrations", False, f"cannot read the schema version: {_reason(exc)}")
    missing = sorted(set(expected) - applied)
    if missing:
        return Check("migrations", False, f"pending: {', '.join(map(str, missing))}")
    return Check("migrations", True, f"{len(expected)} applied")


async def actor_stats(actors: ActorStats, within: float) -> dict[str, Any]:
    """The actor system's stats, asked off the event loop (it blocks on each shard)."""
    async with asyncio.timeout(within):
        return await asyncio.to_thread(actors.stats)


def check_actors(stats: dict[str, Any] | None, error: Exception | None) -> Check:
    if stats is None:
        return Check("actors", False, f"the actors do not answer: {_reason(error)}")
    if not stats.get("shard_actors"):
        return Check("actors", False, "no shard actor is running")
    return Check("actors", True, f"{stats['shard_actors']} shard actors")


async def readiness(
    store: HealthStore,
    actors: ActorStats | None = None,
    *,
    expected: Sequence[int],
    within: float = 3.0,
    circuits: Sequence[CircuitSnapshot] | None = None,
) -> Readiness:
    """Run every check; the actors only where there are actors (the broker)."""
    checks = [
        await check_store(store, within),
        await check_migrations(
            store,
            expected,
            within,
        ),
    ]
    stats: dict[str, Any] | None = None
    if actors is not None:
        error: Exception | None = None
        try:
            stats = await actor_stats(actors, within)
        except Exception as exc:
            error = exc
        checks.append(check_actors(stats, error))
    return Readiness(tuple(checks), stats, None if circuits is None else tuple(circuits))


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown"
