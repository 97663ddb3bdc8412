"""The scale scenario seeds its small audience once and copies it for the later runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from notefly.bench import seed
from notefly.bench.harness import CopyOf
from notefly.bench.scenarios import scale


def users_in(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])
    finally:
        conn.close()


def db_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.db"))


async def test_later_runs_copy_the_first_runs_seeding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = tmp_path / "seeded.db"
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    await seed.create_schema(first)  # the harness migrates only for seeding (no copy)

    scale.seeding(50, keep=keep)(first)
    assert users_in(first) == 50
    assert users_in(keep) == 50

    def no_second_seeding(*args: object, **kwargs: object) -> int:
        raise AssertionError("seeded again instead of copied")

    monkeypatch.setattr(seed, "seed_subscribers", no_second_seeding)
    later = scale.seeding(50, keep=keep)
    # A copy: the harness copies it into a new file without migrating a schema first.
    assert later == CopyOf(keep)
    assert not second.exists()
    later(second)
    assert users_in(second) == 50


async def test_without_a_copy_to_keep_every_run_seeds(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    await seed.create_schema(db)
    scale.seeding(30)(db)
    assert users_in(db) == 30
    assert db_files(tmp_path) == [db], "no copy kept"
