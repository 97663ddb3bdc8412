"""The PostgreSQL server of the tests: throwaway databases, and a clear word when it is away.

The server keeps its state between runs, so every test session names its databases
``notefly_test_<unix time>_<pid>_<random>[_<n>]``, drops them when it ends, and drops
those of crashed sessions once they are an hour old. Where the server is:
``NOTEFLY_TEST_POSTGRES_URL`` (a URL of its maintenance database), by default the local
server as user ``postgres``. Unreachable, the tests that need it are skipped, or fail
when ``CI`` is set: CI must never pass by skipping them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

T = TypeVar("T")

URL_VARIABLE = "NOTEFLY_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "notefly_test_"
STALE_SECONDS = 3600
_NAME = re.compile(rf"^{PREFIX}(\d+)_")


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a thread of its own (outside any test's loop)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_call(make)))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


class PostgresServer:
    """Creates and drops this session's databases on one server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.session = f"{PREFIX}{int(time.time())}_{os.getpid()}_{secrets.token_hex(3)}"
        self._numbers = itertools.count(1)
        self.template: str | None = None  # a migrated database to copy, once made

    def url(self, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    async def _admin(self) -> Any:
        import asyncpg

        return await asyncpg.connect(self.admin_url, timeout=5)

    async def create(self, *, template: str | None = None, locale_order: bool = False) -> str:
        """A new empty database (or a copy of ``template``); returns its name.

        ``locale_order``: sort text as people do (ICU en-US: "a" < "B" < "b"), where the
        server can, so that an ordering that only works in byte order shows.
        """
        name = f"{self.session}_{next(self._numbers)}"
        conn = await self._admin()
        try:
            if locale_order:
                with contextlib.suppress(Exception):  # no ICU here: the default locale
                    await conn.execute(
                        f"CREATE DATABASE {name} TEMPLATE template0"
                        " LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                    )
                    return name
            copy = f" TEMPLATE {template}" if template else ""
            await conn.execute(f"CREATE DATABASE {name}{copy}")
        finally:
            await conn.close()
        return name

    async def drop(self, *names: str) -> None:
        conn = await self._admin()
        try:
            for name in names:
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    async def ours(self) -> list[str]:
        """The databases of this session."""
        return [name for name in await self._test_databases() if name.startswith(self.session)]

    async def drop_stale(self) -> None:
        """Drop what sessions that never cleaned up left behind over an hour ago."""
        now = time.time()
        stale = []
        for name in await self._test_databases():
            match = _NAME.match(name)
            if match and now - int(match.group(1)) > STALE_SECONDS:
                stale.append(name)
        await self.drop(*stale)

    async def _test_databases(self) -> list[str]:
        conn = await self._admin()
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", PREFIX + "%"
            )
        finally:
            await conn.close()
        return [row[0] for row in rows]


def reach_server() -> PostgresServer:
    """The server, checked and swept; skips (fails in CI) when it cannot be used."""
    url = os.environ.get(URL_VARIABLE, DEFAULT_URL)
    parts = urlsplit(url)
    shown = f"{parts.hostname}:{parts.port or 5432}"  # never the password
    try:
        import asyncpg  # noqa: F401 (a declared dependency of the PostgreSQL store)

        server = PostgresServer(url)
        run_sync(server.drop_stale)
    except Exception as exc:
        reason = f"PostgreSQL is not usable at {shown} (set {URL_VARIABLE}): {exc!r}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return server


def sweep(server: PostgresServer) -> None:
    """Drop every database of this session still there."""

    async def drop_ours() -> None:
        await server.drop(*await server.ours())

    run_sync(drop_ours)
