"""`notefly up` as a real process: the seed scenario, pages, shutdown, split services."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.conftest import NoteflyProcess, free_port
from tests.e2e.helpers import deliveries, publish, register, subscribe, wait_delivered

pytestmark = pytest.mark.e2e


def test_seed_scenario_reaches_exactly_the_subscribed_channels(notefly_up: NoteflyProcess):
    notefly_up.start()
    with (
        httpx.Client(base_url=notefly_up.urls["client"], timeout=10) as client,
        httpx.Client(base_url=notefly_up.urls["broker"], timeout=10) as broker,
    ):
        alice = register(client, "alice", email="alice@example.org", phone="+14155550101")
        bob = register(client, "bob", push_token="token-bob")
        carol = register(client, "carol", email="carol@example.org")
        dave = register(client, "dave", email="dave@example.org")  # subscribes to nothing
        subscribe(client, alice, "finance", ["sms", "email"])
        subscribe(client, bob, "movies", ["push"])
        subscribe(client, bob, "sports", ["push"])
        for category in ("finance", "movies", "sports"):
            subscribe(client, carol, category, ["email"])

        sent = {
            c: publish(broker, c, f"{c} news", title=f"{c.title()} today")
            for c in ("finance", "movies", "sports")
        }
        expected = {
            "finance": {
                (alice, "sms", "+14155550101"),
                (alice, "email", "alice@example.org"),
                (carol, "email", "carol@example.org"),
            },
            "movies": {(bob, "push", "token-bob"), (carol, "email", "carol@example.org")},
            "sports": {(bob, "push", "token-bob"), (carol, "email", "carol@example.org")},
        }
        for category, message_id in sent.items():
            status = wait_delivered(broker, message_id)
            rows = deliveries(broker, message_id)
            got = {(r["user"], r["channel"], r["recipient"]) for r in rows}
            assert got == expected[category]
            assert all(r["status"] == "sent" and r["attempts"] == 1 for r in rows)
            assert status["deliveries"] == {
                "total": len(expected[category]),
                "sent": len(expected[category]),
                "queued": 0,
                "failed": 0,
                "skipped": 0,
            }
            assert f"{category} news" in next(r["text"] for r in rows)

        # The in-app inbox on the client service shows what each user got.
        inbox = {
            u: {
                n["category"]
                for n in client.get(f"/users/{u}/notifications").json()["notifications"]
            }
            for u in (alice, bob, carol, dave)
        }
        assert inbox == {
            alice: {"finance"},
            bob: {"movies", "sports"},
            carol: {"finance", "movies", "sports"},
            dave: set(),
        }
    assert notefly_up.stop() == 0

    # Every notification is in the activity log, naming message, delivery and user.
    events = [
        json.loads(line)
        for line in notefly_up.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    recorded = [e for e in events if e.get("event") == "notification.recorded"]
    assert len(recorded) == 7
    assert all(e["message_id"] and e["delivery_id"] and e["user"] for e in recorded)


def test_pages_are_served_to_a_browser(notefly_up: NoteflyProcess):
    notefly_up.start()
    pub = httpx.get(notefly_up.urls["broker"] + "/pub")
    sub = httpx.get(notefly_up.urls["client"] + "/sub")
    assert pub.status_code == 200 and "text/html" in pub.headers["content-type"]
    assert '<select id="category" name="category"' in pub.text and "Finance" in pub.text
    assert sub.status_code == 200 and 'id="register-form"' in sub.text
    form = httpx.post(
        notefly_up.urls["broker"] + "/pub",
        data={"category": "sports", "body": "Goal!", "priority": "high"},
    )
    assert form.status_code == 202 and 'id="message-id"' in form.text
    assert notefly_up.stop() == 0


def test_sigterm_stops_everything_within_seconds(notefly_up: NoteflyProcess):
    notefly_up.start()
    with httpx.Client(base_url=notefly_up.urls["broker"], timeout=10) as broker:
        publish(broker, "finance", "before shutdown")
    started = time.monotonic()
    assert notefly_up.stop(timeout=10) == 0
    assert time.monotonic() - started < 8
    log = notefly_up.log_path.read_text()
    assert "actors.stopped" in log and "notefly.stopped" in log


def test_openapi_is_served_by_both_services(notefly_up: NoteflyProcess):
    notefly_up.start()
    broker = httpx.get(notefly_up.urls["broker"] + "/openapi.json").json()
    client = httpx.get(notefly_up.urls["client"] + "/openapi.json").json()
    assert "/pub" in broker["paths"] and "post" in broker["paths"]["/pub"]
    assert "/sub" in client["paths"] and "/users" in client["paths"]
    assert notefly_up.stop() == 0


def test_broker_and_client_as_separate_processes_share_the_store(tmp_path):
    data = tmp_path / "data"
    bport, cport = free_port(), free_port()
    broker_proc = NoteflyProcess(
        ["broker", "--port", str(bport)],
        data,
        tmp_path / "b.log",
        {"broker": f"http://127.0.0.1:{bport}"},
    )
    client_proc = NoteflyProcess(
        ["client", "--port", str(cport)],
        data,
        tmp_path / "c.log",
        {"client": f"http://127.0.0.1:{cport}"},
    )
    broker_proc.start()
    client_proc.start()
    try:
        with (
            httpx.Client(base_url=client_proc.urls["client"], timeout=10) as client,
            httpx.Client(base_url=broker_proc.urls["broker"], timeout=10) as broker,
        ):
            erin = register(client, "erin", email="erin@example.org")
            subscribe(client, erin, "movies", ["email"])
            message_id = publish(broker, "movies", "Split deployment works")
            wait_delivered(broker, message_id)
            inbox = client.get(f"/users/{erin}/notifications").json()["notifications"]
            assert [n["body"] for n in inbox] == ["Split deployment works"]
    finally:
        assert broker_proc.stop() == 0
        assert client_proc.stop() == 0
