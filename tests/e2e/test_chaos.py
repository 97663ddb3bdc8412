"""Crash test: SIGKILL the broker at random points of a publishing burst, several times.

A single node (``notefly up --workers 1``) delivers on two channels: ``webhook`` through
the real HTTP provider to a receiver in this test process (what it saw survives every
kill), and ``sms`` through the log provider (its records are in the node's log file).
Several publishers post thousands of messages while the node is killed and restarted.
After the last restart, every accepted message must have every expected delivery sent
exactly once in the delivery log, and only what was in flight at a kill may have
reached a provider twice.

The kill points come from a seeded random source; the seed is printed, and
``NOTEFLY_CHAOS_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import NoteflyProcess, free_port
from tests.e2e.helpers import register, subscribe
from tests.e2e.load import PublishLoad, StoreView, WebhookReceiver, recorded, store_env, view_of

pytestmark = pytest.mark.e2e
__all__ = ["store_env"]  # the fixture, imported for pytest

USERS = 300
CATEGORIES = 100
MESSAGES = 2000
PUBLISHERS = 8
KILLS = 4
SHARDS = 2
ROUND_SIZE = 16
FULL_ROUNDS_IN_FLIGHT = 4  # ShardSettings.full_rounds_in_flight
CHANNELS = ("sms", "webhook")
# What one channel can have handed to its provider and not recorded when a kill lands.
IN_FLIGHT_PER_CHANNEL = SHARDS * FULL_ROUNDS_IN_FLIGHT * ROUND_SIZE
DRAIN_SECONDS = 120.0


def channels_of(i: int) -> list[str]:
    """One or two channels per user, so audiences differ between channels."""
    return [["webhook"], ["sms", "webhook"], ["sms"]][i % 3]


def category_of(n: int) -> str:
    return f"chaos{n % CATEGORIES}"


def test_random_sigkills_lose_nothing_and_repeat_only_what_was_in_flight(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    seed = int(os.environ.get("NOTEFLY_CHAOS_SEED", random.randrange(2**32)))
    print(f"chaos seed {seed} (replay with NOTEFLY_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    started = time.monotonic()
    with WebhookReceiver() as receiver:
        node = _node(tmp_path, store_env)
        node.start()
        try:
            expected = _audience(node, receiver)
            ready = time.monotonic()
            view = view_of(node.data_dir, store_env)
            load, unfinished = _publish_while_killing(node, view, rng)
            published = time.monotonic()
            drained = view.wait_finished(DRAIN_SECONDS)
            _replay_unknown(node, view, load)
            assert node.stop() == 0, node.log()
        finally:
            if node.proc is not None and node.proc.poll() is None:
                node.kill()
    assert not receiver.forged, f"webhooks not signed right: {receiver.forged[:5]}"

    complete = _check_delivery_log(view, load, expected)
    _check_provider_side(view, receiver, recorded(node.log_path))
    took = time.monotonic() - started
    print(
        f"seed {seed}: {len(load.accepted)} accepted, {len(load.unknown)} unknown"
        f" ({complete} of them complete), {complete + len(load.accepted)} messages,"
        f" {KILLS} kills, unfinished work at each kill {unfinished}, drained in"
        f" {drained:.1f}s; set-up {ready - started:.1f}s, publishing {published - ready:.1f}s,"
        f" total {took:.1f}s"
    )


def _node(tmp_path: Path, store_env: dict[str, str]) -> NoteflyProcess:
    broker, client = free_port(), free_port()
    return NoteflyProcess(
        ["up", "--workers", "1", "--broker-port", str(broker), "--client-port", str(client)],
        tmp_path / "data",
        tmp_path / "node.log",
        {"broker": f"http://127.0.0.1:{broker}", "client": f"http://127.0.0.1:{client}"},
        env={
            **store_env,
            "NOTEFLY_CHANNELS": ",".join(CHANNELS),
            "NOTEFLY_WEBHOOK_PROVIDER": "http",
            "NOTEFLY_WEBHOOK_ALLOW_HTTP": "1",
            "NOTEFLY_SHARDS_PER_CHANNEL": str(SHARDS),
            "NOTEFLY_ROUND_SIZE": str(ROUND_SIZE),
            "NOTEFLY_POLL_SECONDS": "0.2",
            "NOTEFLY_RETRY_BASE_SECONDS": "0.2",
        },
    )


def _audience(node: NoteflyProcess, receiver: WebhookReceiver) -> dict[str, set[tuple[str, str]]]:
    """Categories and subscribers; returns (user, channel) expected per category."""
    with (
        httpx.Client(base_url=node.urls["broker"], timeout=30) as broker,
        httpx.Client(base_url=node.urls["client"], timeout=30) as client,
    ):
        for k in range(CATEGORIES):
            response = broker.post("/categories", json={"id": f"chaos{k}", "name": f"Chaos {k}"})
            assert response.status_code == 201, response.text

        def make_user(i: int) -> tuple[str, str, list[str]]:
            user = register(client, f"user{i:03d}", phone=f"+1415557{i:04d}")
            if "webhook" in channels_of(i):
                hook = receiver.url_for(user)
                response = client.post(f"/users/{user}/webhooks", json={"url": hook})
                assert response.status_code == 201, response.text
                receiver.secrets[user] = response.json()["secret"]
            subscribe(client, user, category_of(i), channels_of(i))
            return category_of(i), user, channels_of(i)

        with ThreadPoolExecutor(8) as pool:
            made = list(pool.map(make_user, range(USERS)))
    expected: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for category, user, channels in made:
        expected[category].update((user, ch) for ch in channels)
    return expected


def _publish_while_killing(
    node: NoteflyProcess, view: StoreView, rng: random.Random
) -> tuple[PublishLoad, list[int]]:
    """Publish everything, killing and restarting the node at KILLS random points;
    returns the load and how much work was unfinished at each kill."""
    load = PublishLoad(
        node.urls["broker"],
        keys=[f"chaos-{n}" for n in range(MESSAGES)],
        category_of=category_of,
        publishers=PUBLISHERS,
    )
    points = sorted(rng.sample(range(MESSAGES // 10, MESSAGES * 9 // 10), KILLS))
    unfinished: list[int] = []
    load.start()
    try:
        for point in points:
            deadline = time.monotonic() + 120
            while load.sent < point and not load.done():
                assert time.monotonic() < deadline, f"publishing stalled at {load.sent} messages"
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))  # anywhere between two publishes
            node.kill()
            unfinished.append(view.unfinished())
            time.sleep(rng.uniform(0, 0.5))
            node.start()
        load.join(within=120)
    finally:
        load.halt()
    assert sum(unfinished) > 0, "every kill came when nothing was left to do: proves nothing"
    return load, unfinished


def _replay_unknown(node: NoteflyProcess, view: StoreView, load: PublishLoad) -> None:
    """A request cut off by a kill and committed anyway is the same message when sent
    again with its idempotency key: the original id, marked as a replay."""
    committed = dict(
        view.query("SELECT idempotency_key, id FROM messages WHERE idempotency_key LIKE 'chaos-%'")
    )
    with httpx.Client(base_url=node.urls["broker"], timeout=30) as broker:
        for key in sorted(load.unknown & set(committed)):
            n = int(key.removeprefix("chaos-"))
            response = broker.post(
                "/pub",
                json={"category": category_of(n), "body": f"message {n}", "idempotency_key": key},
            )
            assert response.status_code == 202, response.text
            assert response.json()["id"] == committed[key], f"{key} made a second message"
            assert response.headers.get("Idempotent-Replayed") == "true"


def _check_delivery_log(
    view: StoreView, load: PublishLoad, expected: dict[str, set[tuple[str, str]]]
) -> int:
    """Every accepted message, and every unknown one that was committed, has each of
    its deliveries once, sent; returns how many unknown ones were committed."""
    stored = {
        key: (mid, category)
        for mid, key, category in view.query(
            "SELECT id, idempotency_key, category_id FROM messages"
        )
    }
    for key, message_id in load.accepted.items():
        assert stored.get(key, (None,))[0] == message_id, f"accepted {key} is not stored"
    strangers = set(stored) - set(load.accepted) - load.unknown
    assert not strangers, f"messages stored that no publisher sent: {sorted(strangers)[:5]}"
    rows = view.query("SELECT message_id, user_id, channel, status FROM deliveries")
    found: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    not_sent = []
    for message_id, user, channel, status in rows:
        found[message_id][(user, channel)] += 1
        if status != "sent":
            not_sent.append((message_id, user, channel, status))
    assert not not_sent, f"{len(not_sent)} deliveries not sent, e.g. {not_sent[:5]}"
    for key, (message_id, category) in stored.items():
        got = found.get(message_id, Counter())
        assert set(got) == expected[category], (
            f"message {message_id} ({key}): {len(got)} deliveries,"
            f" {len(expected[category])} subscribers' channels expected"
        )
        twice = [pair for pair, count in got.items() if count > 1]
        assert not twice, f"message {message_id} has deliveries recorded twice: {twice[:5]}"
    return len(set(stored) & load.unknown)


def _check_provider_side(
    view: StoreView, receiver: WebhookReceiver, seen_sms: Counter[str]
) -> None:
    """Each provider got every sent delivery of its channel (the webhook with its own
    message), and repeats only within what was in flight at the kills."""
    sent = defaultdict(set)
    for delivery_id, channel, message_id in view.query(
        "SELECT id, channel, message_id FROM deliveries"
    ):
        sent[channel].add(delivery_id)
        if channel == "webhook":
            assert receiver.messages.get(delivery_id) == message_id, delivery_id
    for channel, seen in (("webhook", receiver.counts()), ("sms", seen_sms)):
        missing = sent[channel] - set(seen)
        assert not missing, f"{len(missing)} {channel} deliveries never reached the provider"
        unknown = set(seen) - sent[channel]
        assert not unknown, f"the {channel} provider got deliveries the log lacks: {unknown}"
        most = seen.most_common(3)
        assert not most or most[0][1] <= KILLS + 1, (
            f"{channel} deliveries sent too often: {most};"
            f" arrivals of the first: {receiver.times.get(most[0][0])}"
        )
        repeats = sum(count - 1 for count in seen.values())
        bound = KILLS * IN_FLIGHT_PER_CHANNEL
        assert repeats <= bound, f"{repeats} {channel} repeats, more than {bound} in flight"
        print(f"{channel}: {len(seen)} deliveries, {repeats} repeated (bound {bound})")
