"""API keys and user tokens on PostgreSQL, as a mixin of ``PostgresStore``.

Only hashes are stored (``notefly.auth`` says why SHA-256 is enough); lookups go by
the hash, through its unique index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from notefly.auth import ApiKey, KeyKind
from notefly.errors import Conflict, NotFound
from notefly.ports import Clock

_COLUMNS = "id, name, kind, categories, key_hash, created_at, revoked_at"


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        kind=KeyKind(row[2]),
        categories=tuple(row[3]),
        key_hash=row[4],
        created_at=row[5],
        revoked_at=row[6],
    )


def _rowcount(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PostgresKeys:
    """Needs ``_pool`` and ``_clock`` of PostgresStore."""

    _pool: asyncpg.Pool
    _clock: Clock

    async def add_api_key(self, key: ApiKey) -> ApiKey:
        stored = replace(key, created_at=self._clock.now(), revoked_at=None)
        try:
            await self._pool.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
                stored.id,
                stored.name,
                stored.kind.value,
                list(stored.categories),
                stored.key_hash,
                stored.created_at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"API key {key.id!r} exists already", code="api_key_exists") from exc
        return stored

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        row = await self._pool.fetchrow(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2"
            f" RETURNING {_COLUMNS}",
            self._clock.now(),
            key_id,
        )
        if row is None:
            raise NotFound(f"no API key {key_id!r}", code="api_key_not_found")
        return _key(row)

    async def api_key_by_hash(self, key_hash: str) -> ApiKey:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1", key_hash
        )
        if row is None:
            raise NotFound("no such API key", code="api_key_not_found")
        return _key(row)

    async def active_api_keys(self) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"
        )
        return count

    async def set_user_token(self, user_id: str, token_hash: str) -> None:
        status = await self._pool.execute(
            "UPDATE users SET token_hash = $1 WHERE id = $2", token_hash, user_id
        )
        if _rowcount(status) == 0:
            raise NotFound(f"no user {user_id!r}", code="user_not_found")

    async def user_by_token(self, token_hash: str) -> str:
        user_id: str | None = await self._pool.fetchval(
            "SELECT id FROM users WHERE token_hash = $1", token_hash
        )
        if user_id is None:
            raise NotFound("no user has this token", code="user_not_found")
        return user_id
