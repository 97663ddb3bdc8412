"""Dead letters: the listing of deliveries by status, channel, category and time, and the
bulk redrive of failed ones.

A delivery that exhausted its attempts or failed permanently is ``failed``: that is the
dead-letter state (the API also calls it ``dead``). The listing walks deliveries by
the time they last changed (``updated_at``: set when created, and at every attempt),
newest first, with a keyset cursor over ``(updated_at, id)``: a page that follows a
cursor is the same whatever was inserted meanwhile, since new rows sort before it.

The bulk redrive queues again every failed delivery matching a filter (at most
``limit`` per call), keeping the delivery ids, resetting the attempts, owned by this
node, and hands them to this node's actors, exactly as the redrive of one delivery
does. A delivery that is no longer failed is never taken again, so two concurrent
redrives never queue a delivery twice.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from notefly.domain import Delivery, DeliveryStatus, DeliveryTask
from notefly.errors import InvalidInput
from notefly.operations import Actors

log = structlog.get_logger("notefly.deadletters")

DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_REDRIVE = 1000
MAX_REDRIVE = 10_000


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries: every field set narrows the set; ``since`` <= updated_at < ``until``."""

    status: DeliveryStatus | None = None
    channel: str | None = None
    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryCursor:
    """Where a page ended: the last delivery's ``updated_at`` and id."""

    updated_at: datetime
    id: str

    def encode(self) -> str:
        raw = f"{self.updated_at.astimezone(UTC).isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> DeliveryCursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            stamp, delivery_id = raw.split("|", 1)
            updated_at = datetime.fromisoformat(stamp)
            if updated_at.tzinfo is not None:
                updated_at = updated_at.astimezone(UTC)
        except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
            raise InvalidInput(
                "the cursor is not one this service gave out",
                code="invalid_cursor",
                details=[{"field": "cursor", "problem": "malformed"}],
            ) from exc
        if updated_at.tzinfo is None or not delivery_id:
            raise InvalidInput(
                "the cursor is not one this service gave out",
                code="invalid_cursor",
                details=[{"field": "cursor", "problem": "malformed"}],
            )
        return cls(updated_at, delivery_id)


@dataclass(frozen=True, slots=True)
class ListedDelivery:
    delivery: Delivery
    category_id: str  # of its message

    @property
    def cursor(self) -> DeliveryCursor:
        return DeliveryCursor(self.delivery.updated_at, self.delivery.id)


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    entries: list[ListedDelivery]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class Redriven:
    ids: list[str]  # the deliveries queued again, each under its own id
    more: bool  # failed deliveries matching the filter remain (the limit was reached)


class DeadLetterStore(Protocol):
    async def find_deliveries(
        self, where: DeliveryFilter, limit: int, after: DeliveryCursor | None
    ) -> list[ListedDelivery]:
        """Deliveries matching ``where``, newest change first, after ``after``."""
        ...

    async def requeue_failed_matching(
        self, where: DeliveryFilter, owner: str | None, limit: int
    ) -> tuple[list[DeliveryTask], bool]:
        """Queue again at most ``limit`` failed deliveries matching ``where`` (its status
        is ignored: only failed ones are taken), attempts reset, owned by ``owner``;
        return them as tasks, and whether more remain."""
        ...


def _checked_limit(limit: int, most: int) -> int:
    if not 1 <= limit <= most:
        raise InvalidInput(
            f"limit must be between 1 and {most}",
            code="validation_failed",
            details=[{"field": "limit", "problem": f"between 1 and {most}"}],
        )
    return limit


def _checked_window(where: DeliveryFilter) -> None:
    if where.since is not None and where.until is not None and where.since >= where.until:
        raise InvalidInput(
            "since must come before until",
            code="validation_failed",
            details=[{"field": "since", "problem": "not before until"}],
        )


class DeadLetters:
    """Lists deliveries and redrives failed ones in bulk, on the node ``actors`` runs."""

    def __init__(
        self,
        store: DeadLetterStore,
        actors: Actors,
        redriven: Callable[[str], None],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        """``redriven(channel)`` counts each delivery queued again; ``changed()`` says
        that the failed work changed (the operations snapshot is stale)."""
        self._store = store
        self._actors = actors
        self._redriven = redriven
        self._changed = changed

    async def deliveries(
        self, where: DeliveryFilter, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> DeliveryPage:
        _checked_limit(limit, MAX_PAGE)
        _checked_window(where)
        after = DeliveryCursor.decode(cursor) if cursor is not None else None
        found = await self._store.find_deliveries(where, limit + 1, after)
        if len(found) <= limit:
            return DeliveryPage(found, None)
        return DeliveryPage(found[:limit], found[limit - 1].cursor.encode())

    async def redrive(self, where: DeliveryFilter, limit: int = DEFAULT_REDRIVE) -> Redriven:
        """Queue failed deliveries again and hand them to this node's actors."""
        _checked_limit(limit, MAX_REDRIVE)
        _checked_window(where)
        if where.status not in (None, DeliveryStatus.FAILED):
            raise InvalidInput(
                "only failed (dead) deliveries can be redriven",
                code="validation_failed",
                details=[{"field": "status", "problem": "must be failed or dead"}],
            )
        tasks, more = await self._store.requeue_failed_matching(where, self._actors.node_id, limit)
        if tasks:
            self._actors.dispatch(tasks)
            for task in tasks:
                self._redriven(task.channel)
            self._changed()
        log.info("deliveries.redriven", count=len(tasks), more=more)
        return Redriven([t.id for t in tasks], more)
