"""Versioned schema migrations, applied at start-up and by ``notefly migrate``.

Migrations are the numbered ``.sql`` files under ``notefly/store/sql/<backend>/``.
Each is applied once, in its own transaction, together with its row in
``schema_migrations``; a process that finds a migration already applied skips it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from importlib import resources

import aiosqlite


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """Split the script into statements (sqlite3 runs one per execute)."""
        statements, current = [], ""
        for line in self.sql.splitlines(keepends=True):
            if line.lstrip().startswith("--"):
                continue
            current += line
            if sqlite3.complete_statement(current):
                statements.append(current.strip())
                current = ""
        if current.strip():
            statements.append(current.strip())
        return statements


def load_migrations(backend: str) -> list[Migration]:
    folder = resources.files("notefly.store") / "sql" / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append(Migration(version, entry.name.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def migrate_sqlite(conn: aiosqlite.Connection) -> list[int]:
    """Apply the pending SQLite migrations; return the versions applied now."""
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    await conn.execute("COMMIT")
    applied_now = []
    for migration in load_migrations("sqlite"):
        # BEGIN IMMEDIATE takes the write lock first, so two processes starting at
        # once cannot both decide that a migration is pending.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = await conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            )
            if await cursor.fetchone() is None:
                for statement in migration.statements():
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)"
                    " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.version)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    return applied_now
