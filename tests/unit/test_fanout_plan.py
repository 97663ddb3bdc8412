"""How a fan-out page is planned, whatever the store: the order its rows are written in."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from notefly.addresses import EndpointKind
from notefly.domain import Message, Recipient, partition_of
from notefly.store.fanout import Subscriber, plan_page

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CHANNELS = ("sms", "email", "push")


def subscribers() -> list[Subscriber]:
    found = []
    for i in range(40):
        uid = f"user{i:03d}"
        found.append(
            Subscriber(
                uid, CHANNELS[: 1 + i % 3], uid.title(), f"{uid}@example.org",
                f"+1555{i:07d}", f"tok-{uid}", "UTC", "immediate", None,
            )
        )  # fmt: skip
    return found


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_page_lists_its_rows_the_way_the_shards_send_them(partitions: int) -> None:
    page = subscribers()
    message = Message("msg_1", "finance", "Rates are up", accepted_at=NOW)

    plan = plan_page(
        message,
        page,
        enabled=set(CHANNELS),
        owner="n1",
        throttles={},
        registered={},
        recent=Counter(),
        now=NOW,
        partitions=partitions,
    )

    in_page_order = [(s.user_id, c) for s in page for c in s.channels]
    grouped = sorted(in_page_order, key=lambda d: (d[1], partition_of(d[0], partitions)))
    # Grouped by channel and by the shard of each user; in page order within a group
    # (the order each shard sends in). The sort is stable, so this is that order.
    assert [(d.user_id, d.channel) for d in plan.deliveries] == grouped
    assert len({partition_of(s.user_id, 4) for s in page}) == 4  # the groups are real
    # The tasks, which go to the shards, stay in page order.
    assert [(t.recipient.user_id, t.channel) for t in plan.tasks] == in_page_order


def test_a_page_addresses_each_delivery_from_the_users_fields_or_registrations() -> None:
    message = Message("msg_2", "finance", "Rates are up", accepted_at=NOW)
    page = [
        # Every address of their own.
        Subscriber(
            "u1", ("sms", "email", "push"), "Ann", "ann@example.org", "+15550000001",
            "tok-1", "Europe/Paris", "immediate", None,
        ),
        # No phone, no push token but two web push subscriptions, a webhook registered.
        Subscriber(
            "u2", ("sms", "push", "webhook"), "Bo", None, None, None, "UTC",
            "immediate", None,
        ),
        # Nothing registered for the webhook; apprise is not enabled on this broker.
        Subscriber(
            "u3", ("webhook", "apprise"), "Cy", None, "", None, "UTC", "immediate", None,
        ),
    ]  # fmt: skip
    registered = {"u2": {EndpointKind.WEBPUSH: 2, EndpointKind.WEBHOOK: 1}}

    plan = plan_page(
        message,
        page,
        enabled={"sms", "email", "push", "webhook"},
        owner="n1",
        throttles={},
        registered=registered,
        recent=Counter(),
        now=NOW,
    )

    rows = {(d.user_id, d.channel): d for d in plan.deliveries}
    assert {key: (d.recipient, d.status.value, d.error) for key, d in rows.items()} == {
        ("u1", "sms"): ("+15550000001", "queued", None),
        ("u1", "email"): ("ann@example.org", "queued", None),
        ("u1", "push"): ("tok-1", "queued", None),
        ("u2", "sms"): (None, "skipped", "user has no phone number"),
        ("u2", "push"): ("web-push:2", "queued", None),
        ("u2", "webhook"): ("webhook:1", "queued", None),
        ("u3", "webhook"): (None, "skipped", "user has no webhook endpoint"),
        ("u3", "apprise"): (None, "skipped", "channel 'apprise' is not enabled on this broker"),
    }
    assert plan.skipped == 3
    # What goes out now carries the user's name, zone and the address planned for it.
    sent = {(t.recipient.user_id, t.channel): t.recipient for t in plan.tasks}
    assert set(sent) == {k for k, d in rows.items() if d.status.value == "queued"}
    assert sent[("u1", "email")] == Recipient("u1", "Ann", "ann@example.org", "Europe/Paris")
    assert sent[("u2", "push")] == Recipient("u2", "Bo", "web-push:2", "UTC")
    assert all(d.owner == "n1" for d in plan.deliveries if d.status.value == "queued")
