"""The category actor: one per category, turns a message into deliveries page by page."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pykka
import structlog

from notefly.actors.bridge import LoopBridge
from notefly.actors.messages import Fanout, PageDone, SplitDone, Wake
from notefly.domain import DeliveryTask
from notefly.ports import FanoutPage, Segment, Store
from notefly.schedule import Throttle

log = structlog.get_logger("notefly.actors.category")


class CategoryActor(pykka.ThreadingActor):
    def __init__(
        self,
        category_id: str,
        *,
        store: Store,
        bridge: LoopBridge,
        dispatch: Callable[[Sequence[DeliveryTask]], None],
        has_room: Callable[[], bool],
        on_done: Callable[[bool], None] = lambda segment: None,  # segment: of a split one
        channels: Sequence[str],
        page_size: int,
        owner: str,
        retry_seconds: float,
        throttles: Mapping[str, Throttle] | None = None,
        wait_seconds: float = 0.05,
        partitions: int = 1,
        segment_users: int | None = None,
    ) -> None:
        super().__init__()
        self.category_id = category_id
        self._store = store
        self._bridge = bridge
        self._dispatch = dispatch
        self._has_room = has_room
        self._on_done = on_done
        self._owner = owner
        self._throttles = dict(throttles or {})
        self._wait_seconds = wait_seconds
        self._channels = tuple(channels)
        self._page_size = page_size
        self._retry_seconds = retry_seconds
        self._partitions = partitions
        self._segment_users = segment_users
        # (message id, segment) -> deliveries handed on so far
        self.active: dict[tuple[str, int | None], int] = {}
        # Pages waiting for room, in the order they were asked for.
        self._waiting: deque[Fanout] = deque()
        self._wake_due = False

    def on_receive(self, message: Any) -> None:
        # An exception escaping on_receive would stop this actor for good: contain it.
        try:
            if isinstance(message, Fanout):
                self._next_page(message)
            elif isinstance(message, PageDone):
                self._page_done(message)
            elif isinstance(message, SplitDone):
                self._split_done(message)
            elif isinstance(message, Wake):
                self._wake_due = False
                self._drain()
        except Exception:
            log.exception("category.error", category=self.category_id)

    def _next_page(self, fanout: Fanout) -> None:
        self.active.setdefault(_key(fanout), fanout.handed)
        # Pages go out in the order they were asked for: one waiting for room holds
        # back those behind it, so a later message never overtakes an earlier one on
        # the way to their users.
        self._waiting.append(fanout)
        self._drain()

    def _drain(self) -> None:
        while self._waiting and self._has_room():
            self._request(self._waiting.popleft())
        if self._waiting and not self._wake_due:
            # The node holds as many deliveries as it may: resolve the next pages of
            # the audience when the shards have worked some off (bounded memory).
            self._wake_due = True
            self._bridge.tell_later(self._wait_seconds, self.actor_ref, Wake())

    def _request(self, fanout: Fanout) -> None:
        if fanout.segment is None and fanout.may_split and self._segment_users:
            # A fan-out of the whole audience offers what is left of a big one to every
            # node, in segments, before going on with the first of them.
            split = self._store.split_fanout(
                fanout.message, fanout.cursor, self._segment_users, self._owner
            )
            self._bridge.pipe(split, self.actor_ref, lambda f: SplitDone(fanout, f))
            return
        coro = self._store.fanout_page(
            fanout.message,
            fanout.cursor,
            self._page_size,
            self._channels,
            owner=self._owner,
            throttles=self._throttles,
            partitions=self._partitions,
            segment=fanout.segment,
        )
        self._bridge.pipe(coro, self.actor_ref, lambda f: PageDone(fanout, f))

    def _split_done(self, done: SplitDone) -> None:
        fanout = done.fanout
        error = done.result.exception()
        segment: Segment | None = None
        if error is not None:  # not split: go on with the whole audience
            log.warning(
                "fanout.split_failed",
                message_id=fanout.message.id,
                category=self.category_id,
                error=repr(error),
            )
        else:
            segment = done.result.result()
        handed = self.active.pop(_key(fanout), fanout.handed)
        if segment is not None:
            log.info(
                "fanout.split",
                message_id=fanout.message.id,
                category=self.category_id,
                segment_users=self._segment_users,
            )
            fanout = Fanout(fanout.message, None, handed, segment)
        else:
            fanout = Fanout(fanout.message, fanout.cursor, handed, may_split=False)
        self._next_page(fanout)

    def _page_done(self, done: PageDone) -> None:
        fanout = done.fanout
        message = fanout.message
        error = done.result.exception()
        if error is not None:
            # The page did not commit; nothing of it was handed on. Try it again.
            log.warning(
                "fanout.page_failed",
                message_id=message.id,
                category=self.category_id,
                error=repr(error),
                retry_in=self._retry_seconds,
            )
            self._bridge.tell_later(self._retry_seconds, self.actor_ref, fanout)
            return
        page: FanoutPage = done.result.result()
        if page.tasks:
            self._dispatch(page.tasks)
        key = _key(fanout)
        self.active[key] = self.active.get(key, 0) + len(page.tasks)
        if not page.done:
            self._next_page(Fanout(message, page.cursor, segment=fanout.segment, may_split=False))
            return
        log.info(
            "fanout.done",
            message_id=message.id,
            category=self.category_id,
            segment=None if fanout.segment is None else fanout.segment.seq,
            deliveries=self.active.pop(key, 0),
        )
        self._on_done(fanout.segment is not None)


def _key(fanout: Fanout) -> tuple[str, int | None]:
    return fanout.message.id, None if fanout.segment is None else fanout.segment.seq
