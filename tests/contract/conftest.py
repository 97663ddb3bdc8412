"""The store contract: every test here runs once per backend, each on a fresh database.

``backend`` opens stores on one database (a second store on it is a second node or
process) and reads rows through a connection of its own, as another process would;
``store`` is the first store it opened.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from notefly.ports import Clock, Store
from notefly.store.sqlite import SqliteStore
from notefly.store.sqlite_ops import ops_store
from tests.contract.audience import FakeClock
from tests.contract.postgres_server import PostgresServer, reach_server, run_sync, sweep


class Backend:
    """One database of one backend, and the stores open on it."""

    name: str
    # PostgreSQL tells idle nodes of new work; SQLite cannot, and its nodes poll.
    wakes_on_news: bool
    # What a broken foreign key raises (the services check categories first).
    integrity_error: type[Exception]

    def __init__(self) -> None:
        self._stores: list[Any] = []

    async def open(self, clock: Clock) -> Store:
        """Another store on this database: another node, or the same after a restart."""
        store = await self._open(clock)
        self._stores.append(store)
        return store

    async def close(self, store: Store) -> None:
        self._stores.remove(store)
        await store.close()  # type: ignore[attr-defined]

    async def close_all(self) -> None:
        while self._stores:
            await self.close(self._stores[-1])

    async def _open(self, clock: Clock) -> Any:
        raise NotImplementedError

    def ops(self, store: Store) -> Any:
        """The store's operations read model (``OpsStore``)."""
        return store

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows read through a connection of its own; ``?`` marks a parameter."""
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"
    wakes_on_news = False
    integrity_error = sqlite3.IntegrityError

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def _open(self, clock: Clock) -> Any:
        store = await SqliteStore.open(self.path, clock)
        # The audiences here are a few users: keep even their pages in flight, the way
        # of a broadcast's (a small page is otherwise written whole, as PostgreSQL's).
        store.hold_at_least = 1
        return store

    def ops(self, store: Store) -> Any:
        return ops_store(store)

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(sql, params).fetchall()


class PostgresBackend(Backend):
    name = "postgres"
    wakes_on_news = True

    def __init__(self, server: PostgresServer, database: str) -> None:
        import asyncpg

        super().__init__()
        self.server = server
        self.database = database
        self.url = server.url(database)
        self.integrity_error = asyncpg.IntegrityConstraintViolationError

    async def _open(self, clock: Clock) -> Any:
        from notefly.store.postgres import PostgresStore

        return await PostgresStore.open(self.url, clock, pool_size=4)

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import asyncpg

        parts = sql.split("?")
        numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await conn.fetch(numbered, *params)]
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The server, with this session's migrated template database."""
    server = reach_server()

    async def make_template() -> str:
        import asyncpg

        from notefly.store.postgres_migrations import migrate_postgres

        name = await server.create(locale_order=True)
        conn = await asyncpg.connect(server.url(name))
        try:
            await migrate_postgres(conn)
        finally:
            await conn.close()
        return name

    server.template = run_sync(make_template)
    try:
        yield server
    finally:
        sweep(server)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        chosen: Backend = SqliteBackend(tmp_path / "n.db")
        try:
            yield chosen
        finally:
            await chosen.close_all()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    chosen = PostgresBackend(server, await server.create(template=server.template))
    try:
        yield chosen
    finally:
        try:
            await chosen.close_all()
        finally:
            await server.drop(chosen.database)


@pytest.fixture
async def store(backend: Backend, clock: FakeClock) -> Store:
    return await backend.open(clock)
