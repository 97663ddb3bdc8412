"""Versioned PostgreSQL migrations, applied at start-up and by ``notefly migrate``.

The scripts are the numbered files under ``notefly/store/sql/postgres/``. Several
nodes may start at once against one database: a session-level advisory lock makes
them take turns, so each migration is applied exactly once, in its own transaction
together with its row in ``schema_migrations``.
"""

from __future__ import annotations

import asyncpg

from notefly.store.migrations import load_migrations

# pg_advisory_lock key of Notefly's schema changes: "notefly" in ASCII.
MIGRATION_LOCK = 0x6E6F7465666C79


async def migrate_postgres(conn: asyncpg.Connection) -> list[int]:
    """Apply the pending PostgreSQL migrations; return the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        # Even CREATE TABLE IF NOT EXISTS races with itself: create it under the lock.
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied_now = []
        for migration in load_migrations("postgres"):
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)  # no arguments: the whole script at once
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration.version)
        return applied_now
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
