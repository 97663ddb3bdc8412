"""One delivery, many targets: a user's browsers, webhook endpoints or Apprise URLs.

A delivery goes to every target at once. Targets that took it are remembered (for the
most recent deliveries, in memory), so a retry after a transient failure goes only to
the targets that did not take it yet. Outcome of the delivery: sent when at least one
target took it and none is still worth retrying; transient while one is; permanent
when every target refused for good. A target the service says is gone (``TargetGone``)
is forgotten by the address book, so nothing is sent to it again.

Targets are URLs users typed, so the HTTP providers that reach them connect only to
addresses ``notefly.netguard`` allows: ``guarded_transport`` resolves the name itself,
checks every address, and connects to a checked one (see ``GuardedBackend``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpcore
import httpx
import structlog

from notefly.addresses import Endpoint
from notefly.errors import ChannelError, PermanentChannelError, TransientChannelError
from notefly.netguard import Resolver, TargetRules, resolve
from notefly.ports import SendResult

log = structlog.get_logger("notefly.channels")

MEMORY = 10_000  # deliveries whose successful targets are remembered
MAX_IDS = 500  # characters of provider message ids kept on the delivery row


class TargetGone(PermanentChannelError):
    """The remote service says this target no longer exists (404/410)."""


class TargetRefused(PermanentChannelError):
    """The target's host resolves to an address Notefly may not reach."""


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


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens connections only to addresses the rules allow.

    The check has to be on the address actually connected to: checking a name and then
    letting the HTTP client resolve it again leaves a window in which the name can
    change (DNS rebinding: public when checked, 127.0.0.1 when used). So this backend
    resolves the name once, refuses it if any address is not allowed, and connects to
    the checked address itself. httpcore still takes TLS's server name (SNI, certificate
    check) and the ``Host`` header from the URL, so HTTPS works as before. Connections
    kept alive for reuse were checked when they were opened.
    """

    def __init__(
        self,
        rules: TargetRules,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._rules = rules
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        refused = self._rules.first_refused(addresses)
        if refused is not None:
            address, kind = refused
            raise TargetRefused(
                f"{host} resolves to {address}, a {kind} address: not reached"
                " (only public addresses are, unless NOTEFLY_ALLOW_PRIVATE_TARGETS=1)"
            )
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("a Unix socket is never a target")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(rules: TargetRules, resolver: Resolver = resolve) -> httpx.AsyncBaseTransport:
    """An httpx transport whose connections go through ``GuardedBackend``.

    httpx offers no parameter for httpcore's network backend, so the transport's pool is
    replaced by one built with it, with the TLS context httpx itself would use. A client
    given a transport also ignores proxy settings from the environment, which matters:
    through a proxy, the address connected to would be the proxy's.
    """
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        network_backend=GuardedBackend(rules, resolver),
    )
    return transport
