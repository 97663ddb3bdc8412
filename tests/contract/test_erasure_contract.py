"""Personal data at the store: a user's export names all that is kept about them, and
their erasure leaves nothing of them in any table of the schema (read from the
database's catalogue, so a table added later is covered too)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from notefly.addresses import Endpoint, EndpointKind
from notefly.domain import DeliveryStatus, Outcome, Priority, Subscription, User, delivery_id
from notefly.errors import NotFound
from notefly.ports import Store
from notefly.schedule import Throttle
from tests.contract.audience import T0, FakeClock, message
from tests.contract.conftest import Backend

TARGET = User(
    "usr_target_7f3a",
    "Tess Target",
    email="tess.target@example.org",
    phone="+15559870001",
    push_token="tok-tess-9c2e",
    timezone="Europe/Paris",
    quiet_hours="23:00-06:00",
)
OTHER = User("usr_other_41bd", "Otto Other", email="otto.other@example.org", phone="+15559870002")
ENDPOINTS = [
    Endpoint(
        "e_tess_push",
        TARGET.id,
        EndpointKind.WEBPUSH,
        "https://push.example.net/send/tess-browser-1",
        {"p256dh": "BTessKey", "auth": "tessAuth"},
        "push.example.net",
    ),
    Endpoint(
        "e_tess_hook",
        TARGET.id,
        EndpointKind.WEBHOOK,
        "https://hooks.example.org/tess-hook",
        {"secret": "whsec_tess"},
        "https://hooks.example.org/tess-hook",
    ),
    Endpoint(
        "e_tess_apprise",
        TARGET.id,
        EndpointKind.APPRISE,
        "tgram://tess-bot-token/tess-chat",
        {},
        "tgram://****/tess-chat",
    ),
]
CHANNELS = ["email", "sms", "push", "webhook", "apprise"]
# Everything that identifies Tess: none of it may survive her erasure, anywhere.
SECRETS = [
    TARGET.id,
    "tess.target@example.org",
    "+15559870001",
    "tok-tess-9c2e",
    "tess-browser-1",
    "tess-hook",
    "tess-bot-token",
]


async def seed(store: Any, clock: FakeClock) -> dict[str, str]:
    """Tess with rows in every table that holds user data: her profile with quiet hours,
    an immediate and a daily-digest subscription, three registrations, inbox entries
    (one read), deliveries sent, failed, throttled into a digest and collected for her
    daily digest, and that digest sent. Otto, subscribed alike, stays."""
    for user in (TARGET, OTHER):
        await store.add_user(user)
        await store.upsert_subscription(Subscription(user.id, "sports", tuple(CHANNELS)))
        await store.upsert_subscription(
            Subscription(user.id, "finance", ("email",), schedule="daily@10:00")
        )
    for endpoint in ENDPOINTS:
        await store.add_endpoint(endpoint)
    await store.add_endpoint(
        Endpoint("e_otto_hook", OTHER.id, EndpointKind.WEBHOOK, "https://hooks.example.org/otto")
    )
    throttles = {"sms": Throttle(1, timedelta(hours=1))}  # the second sms is throttled
    for n, category in enumerate(["sports", "sports", "finance"], 1):
        msg = message(f"m{n}", category_id=category, accepted_at=T0 + timedelta(minutes=n))
        await store.accept_message(msg, owner="n1")
        page = await store.fanout_page(msg, None, 10, CHANNELS, owner="n1", throttles=throttles)
        assert page.done
    sent = delivery_id("m1", TARGET.id, "email")
    failed = delivery_id("m1", TARGET.id, "sms")
    await store.record_outcomes(
        [
            Outcome(
                sent,
                DeliveryStatus.SENT,
                1,
                "smtp",
                "smtp-1",
                recipient="tess.target@example.org",
                subject="Hello Tess Target",
                text="Dear Tess Target, title of m1",
            ),
            Outcome(
                failed,
                DeliveryStatus.FAILED,
                5,
                "twilio",
                recipient="+15559870001",
                error="21211 invalid number +15559870001",
            ),
        ]
    )
    inbox = await store.list_notifications(TARGET.id, unread_only=False, limit=10, before=None)
    await store.mark_read(TARGET.id, inbox[0].id)
    clock.set(T0 + timedelta(days=1))  # every digest is due
    digests = await store.claim_digests("n1", 100)
    tess_digests = [d for d in digests if d.recipient.user_id == TARGET.id]
    assert tess_digests, "Tess must have a digest"
    await store.record_outcomes(
        [
            Outcome(
                d.id,
                DeliveryStatus.SENT,
                1,
                "smtp",
                recipient=d.recipient.address,
                subject=f"Digest for {TARGET.name}",
                text=f"updates for {TARGET.email}",
            )
            for d in tess_digests
        ]
    )
    return {"sent": sent, "failed": failed, "read": inbox[0].id}


async def tables(backend: Backend) -> list[str]:
    if backend.name == "sqlite":
        rows = await backend.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await backend.query(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    return sorted(str(row[0]) for row in rows)


async def rows_as_text(backend: Backend, table: str) -> list[str]:
    if backend.name == "sqlite":
        rows = await backend.query(f'SELECT * FROM "{table}"')
        return [" | ".join(str(value) for value in row) for row in rows]
    return [str(row[0]) for row in await backend.query(f'SELECT t::text FROM "{table}" t')]


async def where_found(backend: Backend, needles: list[str]) -> dict[str, set[str]]:
    """Each needle: the tables with a row that contains it."""
    found: dict[str, set[str]] = {needle: set() for needle in needles}
    for table in await tables(backend):
        for text in await rows_as_text(backend, table):
            for needle in needles:
                if needle in text:
                    found[needle].add(table)
    return found


async def test_erasing_a_user_leaves_nothing_of_them_in_any_table(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await seed(store, clock)
    others = await store.export_user(OTHER.id)  # type: ignore[attr-defined]
    before = await where_found(backend, [*SECRETS, OTHER.id])
    # The scan sees the data it looks for: Tess is in every table of user data.
    assert before[TARGET.id] >= {
        "users",
        "subscriptions",
        "endpoints",
        "deliveries",
        "inbox",
        "digests",
    }
    assert all(before[secret] for secret in SECRETS)

    await store.delete_user(TARGET.id)

    after = await where_found(backend, [*SECRETS, OTHER.id])
    assert {secret: after[secret] for secret in SECRETS} == {secret: set() for secret in SECRETS}
    # Nobody else's data went with her.
    assert await store.export_user(OTHER.id) == others  # type: ignore[attr-defined]
    assert after[OTHER.id] >= before[OTHER.id]
    with pytest.raises(NotFound):
        await store.get_user(TARGET.id)
    with pytest.raises(NotFound):
        await store.delete_user(TARGET.id)


async def test_the_export_holds_everything_kept_about_the_user(
    store: Any, clock: FakeClock
) -> None:
    ids = await seed(store, clock)

    export = await store.export_user(TARGET.id)

    user = export.user
    assert (user.id, user.name, user.email, user.phone, user.push_token) == (
        TARGET.id,
        "Tess Target",
        "tess.target@example.org",
        "+15559870001",
        "tok-tess-9c2e",
    )
    assert (user.timezone, user.quiet_hours, user.created_at) == ("Europe/Paris", "23:00-06:00", T0)
    assert [(s.category_id, s.channels, s.schedule) for s in export.subscriptions] == [
        ("finance", ("email",), "daily@10:00"),
        ("sports", tuple(CHANNELS), "immediate"),
    ]
    assert {(e.id, e.kind, e.url, e.label) for e in export.endpoints} == {
        (e.id, e.kind, e.url, e.label) for e in ENDPOINTS
    }
    assert [n.message_id for n in export.notifications] == ["m3", "m2", "m1"]
    assert [n.id for n in export.notifications if n.read_at is not None] == [ids["read"]]
    assert all(n.user_id == TARGET.id for n in export.notifications)
    assert [n.priority for n in export.notifications] == [Priority.HIGH] * 3
    deliveries = {d.id: d for d in export.deliveries}
    assert {d.user_id for d in export.deliveries} == {TARGET.id}
    assert {(d.message_id, d.channel) for d in export.deliveries} == {
        (m, c) for m in ("m1", "m2") for c in CHANNELS
    } | {("m3", "email")}
    sent = deliveries[ids["sent"]]
    assert (sent.status, sent.subject, sent.recipient) == (
        DeliveryStatus.SENT,
        "Hello Tess Target",
        "tess.target@example.org",
    )
    assert deliveries[ids["failed"]].error == "21211 invalid number +15559870001"
    throttled = deliveries[delivery_id("m2", TARGET.id, "sms")]
    assert throttled.mode == "digest" and throttled.note is not None
    assert [d.status for d in export.digests] == ["sent"] * len(export.digests)
    assert {d.channel for d in export.digests} == {"email", "sms"}
    assert all(d.subject == "Digest for Tess Target" for d in export.digests)
    collected = deliveries[delivery_id("m3", TARGET.id, "email")]
    assert collected.digest_id in {d.id for d in export.digests}

    other = await store.export_user(OTHER.id)
    assert {d.user_id for d in other.deliveries} == {OTHER.id}
    assert [e.id for e in other.endpoints] == ["e_otto_hook"]
    assert other.digests and all(d.id not in deliveries for d in other.digests)
    with pytest.raises(NotFound) as missing:
        await store.export_user("usr_nobody")
    assert missing.value.code == "user_not_found"


async def test_a_fan_out_whose_cursor_named_the_user_resumes_where_it_was(
    store: Store, clock: FakeClock
) -> None:
    zed = User("usr_zed", "Zed", email="zed@example.org")
    for user in (OTHER, TARGET, zed):
        await store.add_user(user)
        await store.upsert_subscription(Subscription(user.id, "sports", ("email",)))
    msg = message("m1")
    await store.accept_message(msg)
    first = await store.fanout_page(msg, None, 2, ["email"])
    assert (first.cursor, [t.recipient.user_id for t in first.tasks]) == (
        TARGET.id,
        [OTHER.id, TARGET.id],
    )

    await store.delete_user(TARGET.id)

    [(unfinished, cursor)] = await store.unfinished_fanouts()
    assert (unfinished.id, cursor) == ("m1", OTHER.id)
    rest = await store.fanout_page(msg, cursor, 2, ["email"])
    assert ([t.recipient.user_id for t in rest.tasks], rest.done) == ([zed.id], True)
    assert {d.user_id for d in await store.list_deliveries("m1")} == {OTHER.id, zed.id}
