"""How a fan-out page is planned, whatever the store: the order its rows are written in."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from notefly.domain import Message, partition_of
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
