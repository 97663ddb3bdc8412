"""The JSON log lines of a real process carry the documented field set, in order."""

from __future__ import annotations

import json

import httpx
import pytest

from notefly.logs import LOG_FIELDS
from tests.e2e.conftest import NoteflyProcess
from tests.e2e.helpers import publish, register, subscribe, wait_delivered

pytestmark = pytest.mark.e2e


def test_delivery_events_carry_the_documented_fields(notefly_up: NoteflyProcess):
    notefly_up.env["NOTEFLY_LOG_LEVEL"] = "debug"
    notefly_up.start()
    with (
        httpx.Client(base_url=notefly_up.urls["client"], timeout=10) as client,
        httpx.Client(base_url=notefly_up.urls["broker"], timeout=10) as broker,
    ):
        user = register(client, "fay", email="fay@example.org")
        subscribe(client, user, "sports", ["email"])
        message_id = publish(broker, "sports", "Final score")
        wait_delivered(broker, message_id)
    assert notefly_up.stop() == 0

    # Hypercorn's own start-up lines ("Running on ...") are not JSON yet: skip them.
    lines = [
        json.loads(line)
        for line in notefly_up.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    sent = [e for e in lines if e.get("event") == "delivery.sent"]
    assert len(sent) == 1
    (event,) = sent
    assert set(LOG_FIELDS) <= set(event), event
    assert (event["message_id"], event["user"], event["channel"], event["provider"]) == (
        message_id,
        user,
        "email",
        "log",
    )
    assert event["attempt"] == 1 and event["latency_ms"] >= 0
    assert list(event)[: len(LOG_FIELDS)] == list(LOG_FIELDS)
    recorded = next(e for e in lines if e.get("event") == "notification.recorded")
    assert recorded["delivery_id"] == event["delivery_id"]
