"""``WriteTurns``: the processes on one SQLite file queue for its write lock.

Two ``WriteTurns`` on one file behave as two processes do: each holds its own open
file, and ``flock`` locks of two open files of one file exclude each other."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notefly.store.turns import WriteTurns


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[WriteTurns, WriteTurns]]:
    path = tmp_path / "db.turns"
    first, second = WriteTurns(path), WriteTurns(path)
    yield first, second
    first.close()
    second.close()


def _take_in_thread(turns: WriteTurns, timeout: float) -> tuple[threading.Thread, list[float]]:
    """Take a turn on another thread; the list gets the time it was taken at."""
    taken_at: list[float] = []

    def run() -> None:
        if turns.take(timeout):
            taken_at.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, taken_at


def test_a_free_turn_is_taken_at_once_and_given_back(pair):
    first, second = pair
    assert first.take(0.0)
    first.give_back()
    assert second.take(0.0)
    second.give_back()
    assert first.take(0.0)
    first.give_back()


def test_a_waiter_gets_the_turn_when_it_is_given_back(pair):
    first, second = pair
    assert first.take(0.0)
    thread, taken_at = _take_in_thread(second, timeout=10.0)
    time.sleep(0.2)
    assert taken_at == []  # still waiting
    given_back_at = time.monotonic()
    first.give_back()
    thread.join(5.0)
    assert len(taken_at) == 1
    assert taken_at[0] >= given_back_at
    assert not first.take(0.05)  # the waiter holds it now
    second.give_back()
    assert first.take(0.0)
    first.give_back()


def test_a_waiter_gives_up_after_its_timeout_and_leaves_nothing_held(pair):
    first, second = pair
    assert first.take(0.0)
    started = time.monotonic()
    assert not second.take(0.1)
    assert 0.09 < time.monotonic() - started < 5.0
    first.give_back()
    # The helper takes the turn it was asked for, sees it was given up, and lets go.
    deadline = time.monotonic() + 5.0
    while not first.take(0.0):
        assert time.monotonic() < deadline, "a turn given up was never handed back"
        time.sleep(0.01)
    first.give_back()
    assert second.take(1.0)
    second.give_back()


def test_closing_while_a_helper_waits_does_not_hang(tmp_path: Path):
    path = tmp_path / "db.turns"
    holder, waiter = WriteTurns(path), WriteTurns(path)
    assert holder.take(0.0)
    assert not waiter.take(0.05)  # its helper now waits in flock
    waiter.close()
    waiter.close()  # twice is harmless
    assert not waiter.take(0.0)  # closed: never taken
    holder.give_back()
    holder.close()
