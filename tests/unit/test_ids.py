"""Delivery and inbox ids: stable, and in the order a fan-out writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from notefly.clock import SortableIds
from notefly.domain import AudienceIds, delivery_id, notification_id, ordered_key


class SteppingClock:
    """A clock one millisecond further at every reading."""

    def __init__(self) -> None:
        self._now = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self._now += timedelta(milliseconds=1)
        return self._now


def test_the_same_triple_is_the_same_id_and_another_is_not() -> None:
    assert delivery_id("msg_1", "usr_1", "sms") == delivery_id("msg_1", "usr_1", "sms")
    ids = {
        delivery_id(m, u, c)
        for m in ("msg_1", "msg_2")
        for u in ("usr_1", "usr_2")
        for c in ("sms", "email")
    }
    assert len(ids) == 8
    assert notification_id("msg_1", "usr_1") != notification_id("msg_1", "usr_2")


def test_ids_sort_by_message_then_by_user() -> None:
    ids = SortableIds(SteppingClock())  # type: ignore[arg-type]
    users = [ids("usr") for _ in range(50)]  # created in this order: user id order
    first, second = ids("msg"), ids("msg")

    for make in (lambda m, u: delivery_id(m, u, "sms"), notification_id):
        made = [make(m, u) for m in (first, second) for u in users]
        # What a fan-out writes (message by message, users in id order) comes out
        # sorted, so it is appended to the indexes keyed by these ids.
        assert made == sorted(made)


def test_ids_of_other_shapes_stay_plain_tokens() -> None:
    assert ordered_key("msg_018f2a6b3c00001a2b3c4d5e6") == "018f2a6b3c00001"
    assert ordered_key("u0000042") == "u0000042"
    assert ordered_key("a/b c") == ""
    made = delivery_id("m<1>", "bob@example.org", "email")
    assert made.startswith("d_") and made[2:].isalnum()


def test_ids_stay_what_earlier_versions_made() -> None:
    # Stored rows keep these ids: a fan-out run again after an upgrade must make the
    # same ones, or it would insert every delivery a second time.
    message, user = "msg_0A1B2C3D4E5F6G7H8J9K", "usr_0A1B2C3D4E5"
    assert delivery_id(message, user, "sms") == (
        "d_0A1B2C3D4E5F6G70A1B2C3D4E51f26267d6c866ecef5e41a57"
    )
    assert notification_id(message, "x y") == "n_0A1B2C3D4E5F6G76949f0e12fb14f13a2d835f8"


def test_an_audience_makes_the_ids_one_at_a_time_would() -> None:
    ids = AudienceIds("msg_0A1B2C3D4E5F6G7H8J9K")
    for user in ("usr_0A1B2C3D4E5", "u0000042", "bob@example.org"):
        for channel in ("sms", "email", "push"):
            expected = delivery_id("msg_0A1B2C3D4E5F6G7H8J9K", user, channel)
            assert ids.delivery(user, channel) == expected
            assert ids.delivery(user, channel, ordered_key(user)) == expected
        assert ids.notification(user) == notification_id("msg_0A1B2C3D4E5F6G7H8J9K", user)
