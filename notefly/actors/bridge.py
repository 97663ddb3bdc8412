"""Crossing between actor threads and the asyncio event loop.

Actors never block on the loop and the loop never blocks on an actor: an actor hands
the loop a coroutine and gets its outcome back as a message (the pipe-to pattern).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pykka
import structlog

log = structlog.get_logger("notefly.actors")


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._in_flight: set[concurrent.futures.Future[Any]] = set()

    def pipe(
        self,
        coro: Coroutine[Any, Any, Any],
        to: pykka.ActorRef[Any],
        wrap: Callable[[concurrent.futures.Future[Any]], Any],
    ) -> None:
        """Run ``coro`` on the loop; tell ``to`` ``wrap(future)`` when it ends."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with self._lock:
            self._in_flight.add(future)

        def done(f: concurrent.futures.Future[Any]) -> None:
            with self._lock:
                self._in_flight.discard(f)
            try:
                to.tell(wrap(f))
            except pykka.ActorDeadError:
                # Stopped while the work ran; what it did is in the store and is
                # picked up again by recovery at the next start.
                log.debug("actor.gone", actor=str(to))

        future.add_done_callback(done)

    def tell_later(self, delay: float, to: pykka.ActorRef[Any], message: Any) -> None:
        """Tell ``to`` ``message`` after ``delay`` seconds, without holding a thread."""

        def fire() -> None:
            with contextlib.suppress(pykka.ActorDeadError):
                to.tell(message)

        self.loop.call_soon_threadsafe(self.loop.call_later, delay, fire)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the coroutines piped so far to end."""
        with self._lock:
            pending = [asyncio.wrap_future(f) for f in self._in_flight]
        if pending:
            await asyncio.wait(pending, timeout=grace)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)
