"""SIGKILL during delivery, then a restart: every accepted message ends delivered."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from notefly.store.sqlite_flight import IN_FLIGHT
from tests.e2e.conftest import NoteflyProcess
from tests.e2e.helpers import publish, register, subscribe, wait_delivered

pytestmark = pytest.mark.e2e

USERS = 120
MESSAGES = 20
CHANNELS = ["sms", "email", "push"]


def register_users(client: httpx.Client) -> None:
    """USERS users, each subscribed to finance on every channel."""

    def make_user(i: int) -> None:
        user = register(
            client,
            f"user{i:03d}",
            email=f"u{i}@example.org",
            phone=f"+1415555{i:04d}",
            push_token=f"token-{i}",
        )
        subscribe(client, user, "finance", CHANNELS)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make_user, range(USERS)))


def test_messages_accepted_before_sigkill_are_all_delivered_after_restart(
    notefly_up: NoteflyProcess,
):
    # Small rounds and one shard per channel keep delivery slow enough that the kill
    # lands in the middle of it.
    notefly_up.env = {"NOTEFLY_ROUND_SIZE": "2", "NOTEFLY_SHARDS_PER_CHANNEL": "1"}
    notefly_up.start()
    with (
        httpx.Client(base_url=notefly_up.urls["client"], timeout=10) as client,
        httpx.Client(base_url=notefly_up.urls["broker"], timeout=10) as broker,
    ):
        register_users(client)
        accepted = [publish(broker, "finance", f"tick {n}") for n in range(MESSAGES)]
    notefly_up.kill()

    db = sqlite3.connect(notefly_up.data_dir / "notefly.db")
    stored = {row[0] for row in db.execute("SELECT id FROM messages")}
    unfinished = db.execute(
        "SELECT (SELECT count(*) FROM messages WHERE fanout_done = 0)"
        f" + (SELECT count(*) FROM deliveries WHERE status = 'queued') + ({IN_FLIGHT})"
    ).fetchone()[0]
    db.close()
    assert set(accepted) <= stored, "a 202 was answered for a message that was not committed"
    assert unfinished > 0, "the kill came after delivery had finished; the test proves nothing"

    notefly_up.env = {}
    notefly_up.start()
    with httpx.Client(base_url=notefly_up.urls["broker"], timeout=10) as broker:
        for message_id in accepted:
            status = wait_delivered(broker, message_id, within=120)
            assert status["deliveries"]["sent"] == USERS * len(CHANNELS), status
            assert status["deliveries"]["total"] == USERS * len(CHANNELS), status
    assert notefly_up.stop() == 0
    assert "work.claimed" in notefly_up.log_path.read_text()  # the restart took the work back


def test_a_split_broadcast_killed_midway_is_finished_after_restart(notefly_up: NoteflyProcess):
    # Segments of ten users, pages of two, and room for two deliveries a worker: the
    # broadcast's 56 users after its first page are planned slowly, in six segments
    # shared by the workers, and the kill lands while some are unfinished.
    notefly_up.env = {
        "NOTEFLY_FANOUT_SEGMENT_USERS": "10",
        "NOTEFLY_FANOUT_PAGE_SIZE": "2",
        "NOTEFLY_MAX_PENDING": "2",
    }
    notefly_up.start()
    with (
        httpx.Client(base_url=notefly_up.urls["client"], timeout=10) as client,
        httpx.Client(base_url=notefly_up.urls["broker"], timeout=10) as broker,
    ):
        register_users(client)
        message_id = publish(broker, "finance", "Trading halted")
        db = sqlite3.connect(notefly_up.data_dir / "notefly.db")
        try:
            deadline = time.monotonic() + 30
            # Killed once the broadcast is split and before its segments are all done.
            while not db.execute("SELECT count(*) FROM fanout_segments").fetchone()[0]:
                assert time.monotonic() < deadline, "the broadcast was never split"
                time.sleep(0.02)
            notefly_up.kill()
            open_segments = db.execute(
                "SELECT count(*) FROM fanout_segments WHERE done = 0"
            ).fetchone()[0]
        finally:
            db.close()
    assert open_segments > 0, "the kill came after the fan-out had finished"

    notefly_up.env = {}
    notefly_up.start()
    with httpx.Client(base_url=notefly_up.urls["broker"], timeout=10) as broker:
        status = wait_delivered(broker, message_id, within=120)
    assert status["deliveries"]["sent"] == USERS * len(CHANNELS), status
    assert status["deliveries"]["total"] == USERS * len(CHANNELS), status
    assert notefly_up.stop() == 0
