"""Readiness checks on fakes: each check fails for its own reason and says which."""

from __future__ import annotations

import threading
from typing import Any

from notefly.health import known_migrations, readiness


class Store:
    def __init__(self, applied: list[int], down: bool = False) -> None:
        self.applied = applied
        self.down = down

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("database is locked")

    async def applied_migrations(self) -> list[int]:
        if self.down:
            raise ConnectionError("database is locked")
        return self.applied


class Actors:
    def __init__(self, shard_actors: int = 4, stuck: threading.Event | None = None) -> None:
        self.shard_actors = shard_actors
        self.stuck = stuck

    def stats(self) -> dict[str, Any]:
        if self.stuck is not None:
            self.stuck.wait(5)  # a shard that does not answer its ask
        return {"shard_actors": self.shard_actors, "pending": 0, "entities": 0}


def by_name(ready: Any) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in ready.checks}


async def test_ready_when_every_check_passes():
    ready = await readiness(Store([1, 2]), Actors(), expected=[1, 2])
    assert ready.ok
    assert by_name(ready) == {
        "store": (True, "reachable"),
        "migrations": (True, "2 applied"),
        "actors": (True, "4 shard actors"),
    }
    assert ready.actor_stats is not None and ready.actor_stats["shard_actors"] == 4


async def test_a_pending_migration_is_named():
    ready = await readiness(Store([1]), expected=[1, 2, 3])
    assert not ready.ok
    assert by_name(ready)["migrations"] == (False, "pending: 2, 3")
    assert "actors" not in by_name(ready)  # the client has no actors to check


async def test_an_unreachable_store_fails_both_store_checks():
    ready = await readiness(Store([1], down=True), expected=[1])
    checks = by_name(ready)
    assert not ready.ok
    assert checks["store"][0] is False and "database is locked" in checks["store"][1]
    assert checks["migrations"][0] is False


async def test_stopped_actors_are_not_ready():
    ready = await readiness(Store([1]), Actors(shard_actors=0), expected=[1])
    assert by_name(ready)["actors"] == (False, "no shard actor is running")


async def test_actors_that_do_not_answer_time_out():
    stuck = threading.Event()
    try:
        ready = await readiness(Store([1]), Actors(stuck=stuck), expected=[1], within=0.05)
    finally:
        stuck.set()
    assert by_name(ready)["actors"] == (False, "the actors do not answer: timed out")


def test_known_migrations_are_the_packaged_ones():
    versions = known_migrations("sqlite")
    assert versions[0] == 1 and versions == sorted(versions)
