"""One delivery, many targets: a user's browsers, webhook endpoints or Apprise URLs.

A delivery goes to every target at once. Targets that took it are remembered (for the
most recent deliveries, in memory), so a retry after a transient failure goes only to
the targets that did not take it yet. Outcome of the delivery: sent when at least one
target took it and none is still worth retrying; transient while one is; permanent
when every target refused for good. A target the service says is gone (``TargetGone``)
is forgotten by the address book, so nothing is sent to it again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import structlog

from notefly.addresses import Endpoint
from notefly.errors import ChannelError, PermanentChannelError, TransientChannelError
from notefly.ports import SendResult

log = structlog.get_logger("notefly.channels")

MEMORY = 10_000  # deliveries whose successful targets are remembered
MAX_IDS = 500  # characters of provider message ids kept on the delivery row


class TargetGone(PermanentChannelError):
    """The remote service says this target no longer exists (404/410)."""


SendOne = Callable[[Endpoint], Awaitable[str | None]]
Forget = Callable[[Endpoint], Awaitable[None]]


class TargetFanout:
    def __init__(self, provider: str, memory: int = MEMORY) -> None:
        self._provider = provider
        self._memory = memory
        self._done: OrderedDict[str, dict[str, str | None]] = OrderedDict()

    def _took(self, delivery_id: str) -> dict[str, str | None]:
        took = self._done.setdefault(delivery_id, {})
        self._done.move_to_end(delivery_id)
        while len(self._done) > self._memory:
            self._done.popitem(last=False)
        return took

    async def send(
        self,
        delivery_id: str,
        targets: Sequence[Endpoint],
        send_one: SendOne,
        forget: Forget,
        nothing: str,
    ) -> SendResult:
        """Send to the targets that did not take this delivery yet.

        Args:
            nothing: what to say when the user has no target at all.
        """
        took = self._took(delivery_id)
        if not targets and not took:
            self._done.pop(delivery_id, None)
            raise PermanentChannelError(f"{self._provider}: {nothing}")

        async def one(target: Endpoint) -> None:
            took[target.id] = await send_one(target)  # noted at once: a timeout may follow

        pending = [t for t in targets if t.id not in took]
        results = await asyncio.gather(*(one(t) for t in pending), return_exceptions=True)
        retry: list[TransientChannelError] = []
        refused: list[ChannelError] = []
        for target, result in zip(pending, results, strict=True):
            if isinstance(result, TargetGone):
                await forget(target)
                log.info("target.gone", provider=self._provider, endpoint=target.id)
                refused.append(result)
            elif isinstance(result, TransientChannelError):
                retry.append(result)
            elif isinstance(result, PermanentChannelError):
                refused.append(result)
            elif isinstance(result, BaseException):
                raise result
        if retry:
            waits = [e.retry_after for e in retry if e.retry_after is not None]
            raise TransientChannelError(
                f"{len(retry)} of {len(targets)} targets failed: {retry[0].message}",
                retry_after=max(waits) if waits else None,
            )
        self._done.pop(delivery_id, None)
        if not took:
            raise PermanentChannelError(
                f"every target refused ({len(refused)}): {refused[0].message}"
                if refused
                else f"{self._provider}: {nothing}"
            )
        if refused:
            log.warning(
                "targets.refused", provider=self._provider, refused=len(refused), took=len(took)
            )
        ids = " ".join(i for i in took.values() if i)
        return SendResult(self._provider, ids[:MAX_IDS] or None)
