"""The bench harness fills each new database: a copy as it is, other seed data on a
freshly migrated schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from notefly.bench import harness
from notefly.bench.harness import CopyOf


def tables_in(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {
            row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        }
    finally:
        conn.close()


async def test_a_copy_is_copied_without_a_schema_made_first(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE marker (n INTEGER)")
    conn.execute("INSERT INTO marker VALUES (7)")
    conn.commit()
    conn.close()

    db = tmp_path / "new.db"
    await harness.prepare(db, CopyOf(source))

    # No migration ran: the new file holds the source's one table and nothing else.
    assert tables_in(db) == {"marker"}
    assert db.read_bytes() == source.read_bytes()


async def test_other_seed_data_finds_a_migrated_schema(tmp_path: Path) -> None:
    seen: list[set[str]] = []
    db = tmp_path / "new.db"
    await harness.prepare(db, lambda path: seen.append(tables_in(path)))

    assert len(seen) == 1
    assert {"schema_migrations", "users", "subscriptions", "deliveries"} <= seen[0]
