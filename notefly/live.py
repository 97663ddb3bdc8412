"""Live inbox: learning of new inbox entries as they are written, by any process.

The broker may run in another process than the client, so the client cannot be told
of new entries; it polls the store. One ``InboxWatcher`` per process polls for all its
listeners at once (one cheap query by sequence number every ``poll_seconds``), and
wakes only the listeners of users who got something; each then reads its own entries.
Nobody listening, no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import structlog

from notefly.domain import Notification

log = structlog.get_logger("notefly.live")


class InboxFeed(Protocol):
    async def inbox_head(self) -> int:
        """The highest inbox sequence number so far (0 when the inbox is empty)."""
        ...

    async def inbox_news(self, after_seq: int, limit: int) -> tuple[int, set[str], bool]:
        """The users with entries after ``after_seq``, reading at most ``limit`` entries:
        (the sequence number read up to, the users, whether ``limit`` cut the read)."""
        ...

    async def inbox_after(
        self, user_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, Notification]]: ...

    async def inbox_seq(self, user_id: str, notification_id: str) -> int:
        """Raises ``NotFound``."""
        ...


class InboxWatcher:
    def __init__(self, feed: InboxFeed, *, poll_seconds: float = 0.5, batch: int = 5000):
        self._feed = feed
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    @contextlib.asynccontextmanager
    async def listen(self, user_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``user_id`` may have new entries; clear it, then read.

        The entries a listener must read itself are those it knew nothing of when it
        started listening; the watcher reports everything written after that.
        """
        event = asyncio.Event()
        if self._task is None:
            # Read the head before the listener reads its own entries: whatever is
            # committed after this point is reported, what came before the listener sees.
            head = await self._feed.inbox_head()
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(
                    self._run(head), name="inbox-watcher"
                )
        self._listeners.setdefault(user_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._listeners.get(user_id, set())
            waiting.discard(event)
            if not waiting:
                self._listeners.pop(user_id, None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, head: int) -> None:
        while True:
            more = False
            try:
                self.polls += 1
                head, users, more = await self._feed.inbox_news(head, self._batch)
                for user_id in users:
                    for event in self._listeners.get(user_id, ()):
                        event.set()
            except Exception as exc:  # the store may be away for a while: keep polling
                log.error("live.poll_failed", error=repr(exc))
            if not self._listeners:
                self._task = None
                return
            if not more:
                await asyncio.sleep(self._poll_seconds)
