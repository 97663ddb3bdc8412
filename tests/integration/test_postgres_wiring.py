"""Choosing the store from NOTEFLY_DATABASE_URL, and a container on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.domain import User
from notefly.errors import ConfigurationError
from notefly.store.sqlite import SqliteStore
from tests.contract.postgres_server import PostgresServer, reach_server, sweep


def test_sqlite_stays_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"NOTEFLY_DATA_DIR": str(tmp_path)})
    assert (settings.store_backend, settings.sqlite_path) == ("sqlite", tmp_path / "notefly.db")
    explicit = Settings.from_env({"NOTEFLY_DATABASE_URL": "sqlite:///x/n.db"})
    assert (explicit.store_backend, explicit.sqlite_path) == ("sqlite", Path("x/n.db"))
    assert settings.database_pool_size == 10


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_chooses_postgresql(scheme: str) -> None:
    settings = Settings.from_env(
        {
            "NOTEFLY_DATABASE_URL": f"{scheme}://notefly:s3cret@db.example.org:5433/notefly",
            "NOTEFLY_DATABASE_POOL_SIZE": "25",
        }
    )
    assert (settings.store_backend, settings.database_pool_size) == ("postgres", 25)
    # Printed or logged, the URL never shows its password.
    assert settings.database_label == f"{scheme}://notefly:***@db.example.org:5433/notefly"
    with pytest.raises(ConfigurationError) as caught:
        _ = settings.sqlite_path
    assert "s3cret" not in str(caught.value)


def test_an_unknown_database_url_fails_at_start_up_without_its_password() -> None:
    settings = Settings(database_url="mysql://root:hunter2@db.example.org/notefly")
    with pytest.raises(ConfigurationError) as caught:
        _ = settings.store_backend
    assert "postgresql://" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigurationError):
        Settings.from_env({"NOTEFLY_DATABASE_POOL_SIZE": "0"})


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    server = reach_server()
    try:
        yield server
    finally:
        sweep(server)


@pytest.fixture
async def database_url(server: PostgresServer) -> AsyncIterator[str]:
    name = await server.create()
    try:
        yield server.url(name)
    finally:
        await server.drop(name)


async def test_a_container_on_a_postgresql_url_opens_a_migrated_postgresql_store(
    database_url: str, tmp_path: Path
) -> None:
    from notefly.store.postgres import PostgresStore

    container = Container(settings=Settings(data_dir=tmp_path, database_url=database_url))
    await start(container.store)
    try:
        store = await resolve(container.store)
        assert isinstance(store, PostgresStore)
        await store.add_user(User("u1", "Ada"))
        assert [c.id for c in await store.list_categories()] == ["finance", "movies", "sports"]
    finally:
        await stop(container.store)
    assert not (tmp_path / "notefly.db").exists(), "no SQLite file beside it"

    again = Container(settings=Settings(data_dir=tmp_path))
    await start(again.store)
    try:
        assert isinstance(await resolve(again.store), SqliteStore)
    finally:
        await stop(again.store)
