"""SIGKILL during delivery, then a restart: every accepted message ends delivered."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import NoteflyProcess
from tests.e2e.helpers import publish, register, subscribe, wait_delivered

pytestmark = pytest.mark.e2e

USERS = 120
MESSAGES = 20
CHANNELS = ["sms", "email", "push"]


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
        accepted = [publish(broker, "finance", f"tick {n}") for n in range(MESSAGES)]
    notefly_up.kill()

    db = sqlite3.connect(notefly_up.data_dir / "notefly.db")
    stored = {row[0] for row in db.execute("SELECT id FROM messages")}
    unfinished = db.execute(
        "SELECT (SELECT count(*) FROM messages WHERE fanout_done = 0)"
        " + (SELECT count(*) FROM deliveries WHERE status = 'queued')"
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
