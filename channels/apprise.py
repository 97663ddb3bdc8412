"""The Apprise bridge: each user's registered Apprise URLs (Slack, Telegram, Discord,
ntfy, Matrix, ...; ``POST /users/{id}/apprise-urls`` on the client).

Apprise's services are blocking code; they run on Apprise's own worker threads through
its async API, never on the event loop. Apprise reports only success or failure, so a
failure is retried (up to the attempt limit) and a URL that no longer parses, or
whose service is no longer allowed, is permanent. Apprise URLs carry credentials:
they are never logged, and Apprise's own log records (which may quote them) are kept
from reaching any handler of this process.

Settings: ``NOTEFLY_APPRISE_SCHEMES`` (the services users may register, by URL scheme;
see ``notefly.registrations``).

Services whose URL names the server to reach (json://, ntfy:// in private mode, gotify://,
Matrix, Mattermost, Rocket.Chat; ``registrations.apprise_host``) are checked against
``notefly.netguard`` before each send, as at registration. What cannot be checked from
here: Apprise resolves the name again when it connects, a moment after the check (a
name rebound in between is reached), and it follows HTTP redirects; services calling
their vendor's fixed API are not checked at all. ``NOTEFLY_APPRISE_SCHEMES`` is the
control for those: leave out the schemes that name a server where that matters.
"""

from __future__ import annotations

import logging
import time

import apprise
import structlog

from channels._targets import TargetFanout
from notefly.addresses import AddressBook, Endpoint, EndpointKind
from notefly.config import Settings
from notefly.domain import Rendered
from notefly.errors import (
    InvalidInput,
    NotFound,
    PermanentChannelError,
    TransientChannelError,
)
from notefly.netguard import Resolver, TargetRules, check_host, resolve
from notefly.ports import SendResult
from notefly.registrations import RegistrationPolicy, apprise_host, apprise_service

log = structlog.get_logger("notefly.channels.apprise")

PROVIDER = "apprise"


class AppriseProvider:
    name = "apprise"
    provider = PROVIDER

    def __init__(
        self,
        addresses: AddressBook,
        schemes: frozenset[str],
        rules: TargetRules | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self._addresses = addresses
        self._schemes = schemes
        self._rules = rules or TargetRules()
        self._resolver = resolver
        self._fanout = TargetFanout(PROVIDER)

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        try:
            context = await self._addresses.delivery_context(delivery_id)
        except NotFound:
            raise PermanentChannelError("apprise: the delivery or its user is gone") from None
        targets = await self._addresses.list_endpoints(context.user_id, EndpointKind.APPRISE)

        async def notify(target: Endpoint) -> str | None:
            return await self._notify(target, rendered)

        return await self._fanout.send(
            delivery_id, targets, notify, self._keep, "the user has no Apprise URL"
        )

    async def _keep(self, target: Endpoint) -> None:
        """Apprise never says a target is gone; nothing to forget."""

    async def _notify(self, target: Endpoint, rendered: Rendered) -> str | None:
        try:
            # A fresh service per send: a kept one would hold Apprise's throttle.
            plugin = apprise_service(target.url, self._schemes)
        except InvalidInput as exc:
            raise PermanentChannelError(f"apprise: {target.label}: {exc.message}") from None
        host = apprise_host(target.url.partition("://")[0].lower(), plugin)
        if host is not None:
            try:
                await check_host(*host, self._rules, "url", self._resolver)
            except InvalidInput as exc:
                raise PermanentChannelError(f"apprise: {target.label}: {exc.message}") from None
        started = time.perf_counter()
        ok = await plugin.async_notify(body=rendered.text, title=rendered.subject or "")
        log.debug(
            "apprise.notified",
            service=target.label.partition("://")[0],
            ok=ok,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        if not ok:
            raise TransientChannelError(f"apprise: {target.label}: the service refused or failed")
        return None


def AppriseChannel(settings: Settings, addresses: AddressBook) -> AppriseProvider:
    """The ``apprise.apprise`` provider, from settings."""
    # Apprise logs may quote URLs, credentials included: keep them inside Apprise.
    logging.getLogger("apprise").propagate = False
    apprise.Apprise.instantiate("json://localhost")  # loads the plugins now, not at a send
    policy = RegistrationPolicy.from_settings(settings)
    return AppriseProvider(addresses, policy.apprise_schemes, policy.rules(EndpointKind.APPRISE))
