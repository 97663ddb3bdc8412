"""API keys and user tokens on SQLite, as a mixin of ``SqliteStore``.

Only hashes are stored (``notefly.auth`` says why SHA-256 is enough); lookups go by
the hash, through its unique index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import aiosqlite

from notefly.auth import ApiKey, KeyKind
from notefly.errors import Conflict, NotFound
from notefly.ports import Clock
from notefly.store.sqlite_reads import read_all
from notefly.store.writer import GroupCommitWriter

_COLUMNS = "id, name, kind, categories, key_hash, created_at, revoked_at"


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        kind=KeyKind(row[2]),
        categories=tuple(json.loads(row[3])),
        key_hash=row[4],
        created_at=datetime.fromisoformat(row[5]),
        revoked_at=datetime.fromisoformat(row[6]) if row[6] else None,
    )


class SqliteKeys:
    """Needs ``_reader``, ``writer`` and ``_clock`` of SqliteStore."""

    _reader: aiosqlite.Connection
    writer: GroupCommitWriter
    _clock: Clock

    async def _key_rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await read_all(self._reader, sql, params)

    async def add_api_key(self, key: ApiKey) -> ApiKey:
        stored = replace(key, created_at=self._clock.now(), revoked_at=None)

        async def op(conn: aiosqlite.Connection) -> None:
            try:
                await conn.execute(
                    f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (
                        stored.id,
                        stored.name,
                        stored.kind.value,
                        json.dumps(list(stored.categories)),
                        stored.key_hash,
                        stored.created_at.isoformat() if stored.created_at else None,
                    ),
                )
            except aiosqlite.IntegrityError as exc:
                raise Conflict(f"API key {key.id!r} exists already", code="api_key_exists") from exc

        await self.writer.run(op)
        return stored

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._key_rows(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        now = self._clock.now().isoformat()

        async def op(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                (now, key_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no API key {key_id!r}", code="api_key_not_found")

        await self.writer.run(op)
        rows = await self._key_rows(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return _key(rows[0])

    async def api_key_by_hash(self, key_hash: str) -> ApiKey:
        rows = await self._key_rows(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)
        )
        if not rows:
            raise NotFound("no such API key", code="api_key_not_found")
        return _key(rows[0])

    async def active_api_keys(self) -> int:
        rows = await self._key_rows("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        count: int = rows[0][0]
        return count

    async def set_user_token(self, user_id: str, token_hash: str) -> None:
        async def op(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute(
                "UPDATE users SET token_hash = ? WHERE id = ?", (token_hash, user_id)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no user {user_id!r}", code="user_not_found")

        await self.writer.run(op)

    async def user_by_token(self, token_hash: str) -> str:
        rows = await self._key_rows("SELECT id FROM users WHERE token_hash = ?", (token_hash,))
        if not rows:
            raise NotFound("no user has this token", code="user_not_found")
        user_id: str = rows[0][0]
        return user_id
