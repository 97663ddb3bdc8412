"""The operations read model (``OpsStore``): what the status page and the redrive use."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from notefly.domain import DeliveryStatus, Outcome, delivery_id
from notefly.errors import Conflict, NotFound
from notefly.ports import Store
from notefly.store.migrations import load_migrations
from tests.contract.audience import (
    T0,
    FakeClock,
    fan_out_completely,
    message,
    seed_audience,
)
from tests.contract.conftest import Backend


@pytest.fixture
def ops(backend: Backend, store: Store) -> Any:
    return backend.ops(store)


async def failing_deliveries(store: Store, clock: FakeClock) -> dict[str, str]:
    """m1 fanned out; u1's email failed at T0+10s, u4's email at T0+20s (smtp), u3's sms
    is retried after a twilio error at T0+30s. Returns those delivery ids by user."""
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    await fan_out_completely(store, msg)
    ids = {
        "u1": delivery_id(msg.id, "u1", "email"),
        "u4": delivery_id(msg.id, "u4", "email"),
        "u3": delivery_id(msg.id, "u3", "sms"),
    }
    for seconds, outcome in [
        (10, Outcome(ids["u1"], DeliveryStatus.FAILED, 5, "smtp", error="550 no such user")),
        (20, Outcome(ids["u4"], DeliveryStatus.FAILED, 5, "smtp", error="552 mailbox full")),
        (30, Outcome(ids["u3"], DeliveryStatus.QUEUED, 1, "twilio", error="timeout")),
    ]:
        clock.set(T0 + timedelta(seconds=seconds))
        await store.record_outcomes([outcome])
    return ids


async def test_the_applied_migrations_are_every_shipped_one(ops: Any, backend: Backend) -> None:
    assert await ops.applied_migrations() == [m.version for m in load_migrations(backend.name)]
    await ops.ping()


async def test_work_counts_failed_deliveries_and_provider_errors(
    store: Store, ops: Any, clock: FakeClock
) -> None:
    assert await ops.work_counts() == {"queued": 0, "failed": 0}
    ids = await failing_deliveries(store, clock)

    assert await ops.work_counts() == {"queued": 3, "failed": 2}
    failed = await ops.failed_deliveries(10)
    assert [(f.id, f.user, f.channel, f.provider, f.attempts, f.error) for f in failed] == [
        (ids["u4"], "u4", "email", "smtp", 5, "552 mailbox full"),
        (ids["u1"], "u1", "email", "smtp", 5, "550 no such user"),
    ]
    assert [f.failed_at for f in failed] == [T0 + timedelta(seconds=20), T0 + timedelta(seconds=10)]
    assert [f.id for f in await ops.failed_deliveries(1)] == [ids["u4"]]
    errors = sorted((e.channel, e.provider, e.error, e.at) for e in await ops.provider_errors())
    assert errors == [
        ("email", "smtp", "552 mailbox full", T0 + timedelta(seconds=20)),
        ("sms", "twilio", "timeout", T0 + timedelta(seconds=30)),
    ]


async def test_recent_messages_come_newest_first_with_their_counts(
    store: Store, ops: Any, clock: FakeClock
) -> None:
    await failing_deliveries(store, clock)
    await store.accept_message(message("m2", accepted_at=T0 + timedelta(minutes=1)))

    recent = await ops.recent_messages(10)
    assert [(m.id, m.fanout_done, m.deliveries) for m in recent] == [
        ("m2", False, {}),
        ("m1", True, {"queued": 3, "failed": 2, "skipped": 2}),
    ]
    assert (recent[1].category, recent[1].title, recent[1].accepted_at) == (
        "sports",
        "title of m1",
        T0,
    )
    assert [m.id for m in await ops.recent_messages(1)] == ["m2"]


async def test_a_redriven_delivery_is_queued_again_for_its_new_node(
    store: Store, ops: Any, backend: Backend, clock: FakeClock
) -> None:
    ids = await failing_deliveries(store, clock)

    task = await ops.requeue_failed(ids["u4"], "n2")

    assert (task.id, task.attempts, task.channel, task.recipient.address) == (
        ids["u4"],
        0,
        "email",
        "dee@example.org",
    )
    assert task.message == message()
    redriven = next(d for d in await store.list_deliveries("m1") if d.id == ids["u4"])
    assert (redriven.status, redriven.attempts, redriven.error) == (DeliveryStatus.QUEUED, 0, None)
    assert await backend.query("SELECT owner FROM deliveries WHERE id = ?", ids["u4"]) == [("n2",)]
    assert await ops.work_counts() == {"queued": 4, "failed": 1}


async def test_only_a_failed_delivery_can_be_redriven(
    store: Store, ops: Any, clock: FakeClock
) -> None:
    ids = await failing_deliveries(store, clock)
    with pytest.raises(Conflict) as conflict:
        await ops.requeue_failed(ids["u3"], "n2")
    assert conflict.value.code == "delivery_not_failed"
    with pytest.raises(NotFound) as missing:
        await ops.requeue_failed("d_unknown", "n2")
    assert missing.value.code == "delivery_not_found"
