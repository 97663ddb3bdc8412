"""Use cases: a user registers (and removes) web push subscriptions, webhook endpoints
and Apprise URLs, the addresses of the push, webhook and apprise channels.

What is registered is checked here, so nothing unusable reaches a provider: push and
webhook URLs must be HTTPS (plain HTTP only to a loopback host, and only when a
setting allows it, for tests and local development); an Apprise URL must parse and
use an allowed service; a host that resolves to a loopback or private address is
refused (``notefly.netguard``; the providers check again when they send). Removing the
last address of a channel that a subscription still uses is refused, as removing a
user's email address is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from notefly.addresses import CHANNEL_KINDS, AddressBook, Endpoint, EndpointKind
from notefly.config import Settings
from notefly.errors import InvalidInput, NotFound
from notefly.netguard import (
    Resolver,
    TargetRules,
    allows_private,
    check_host,
    check_url_target,
    resolve,
)
from notefly.ports import Clock, IdFactory, Store
from notefly.provider_settings import ProviderSettings

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

MAX_URL = 2048
# Services that notify a person somewhere else; not the ones acting on this machine
# (syslog, desktop notifications) nor plain-HTTP posts to any host.
_SCHEMES = "discord slack tgram ntfy ntfys matrix matrixs msteams mmost mmosts rocket rockets"
DEFAULT_APPRISE_SCHEMES = frozenset(
    f"{_SCHEMES} gotify gotifys pover pbul jsons forms xmls".split()
)


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    allow_http_webhooks: bool = False
    allow_http_push: bool = False
    apprise_schemes: frozenset[str] = field(default=DEFAULT_APPRISE_SCHEMES)
    # Targets on loopback or private networks (SSRF, see notefly.netguard); the
    # ALLOW_HTTP settings, for tests and local development, allow loopback.
    allow_private_targets: bool = False

    def rules(self, kind: EndpointKind) -> TargetRules:
        loopback = {
            EndpointKind.WEBHOOK: self.allow_http_webhooks,
            EndpointKind.WEBPUSH: self.allow_http_push,
        }.get(kind, False)
        return TargetRules(allow_loopback=loopback, allow_private=self.allow_private_targets)

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistrationPolicy:
        webhook = ProviderSettings(settings, "WEBHOOK", "webhook registration")
        push = ProviderSettings(settings, "WEBPUSH", "push registration")
        apprise = ProviderSettings(settings, "APPRISE", "apprise registration")
        schemes = apprise.get("SCHEMES")
        return cls(
            allow_http_webhooks=webhook.flag("ALLOW_HTTP"),
            allow_http_push=push.flag("ALLOW_HTTP"),
            apprise_schemes=(
                frozenset(s.strip().lower() for s in schemes.split(",") if s.strip())
                if schemes
                else DEFAULT_APPRISE_SCHEMES
            ),
            allow_private_targets=allows_private(settings),
        )


def _invalid(field_name: str, problem: str) -> InvalidInput:
    return InvalidInput(
        f"{field_name}: {problem}",
        code="validation_failed",
        details=[{"field": field_name, "problem": problem}],
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool, field_name: str = "url") -> str:
    """An HTTPS URL, or HTTP to a loopback host when ``allow_http``."""
    if len(url) > MAX_URL:
        raise _invalid(field_name, f"longer than {MAX_URL} characters")
    parts = urlsplit(url)
    host = parts.hostname or ""
    # No spaces nor control characters (a NUL, a line break) anywhere in it.
    if not host or parts.scheme not in ("https", "http") or not url.isprintable() or " " in url:
        raise _invalid(field_name, "not an http(s) URL")
    if parts.scheme == "http" and not (allow_http and _is_loopback(host)):
        raise _invalid(field_name, "must be https://")
    return url


def _b64url(value: str, field_name: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise _invalid(field_name, "not base64url") from None


def check_push_keys(p256dh: str, auth: str) -> None:
    """The keys of a PushSubscription: a P-256 public point and a 16-byte secret."""
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url(p256dh, "p256dh"))
    except ValueError:
        raise _invalid("keys.p256dh", "not a P-256 public key") from None
    if len(_b64url(auth, "auth")) != 16:
        raise _invalid("keys.auth", "must be 16 bytes")


def apprise_service(url: str, schemes: frozenset[str]) -> NotifyBase:
    """The Apprise service an URL names, if Apprise can use it and it is allowed.

    Raises:
        InvalidInput: it is not, with the reason.
    """
    import apprise  # a slow import (every plugin): only where Apprise is used

    scheme, found, _rest = url.partition("://")
    scheme = scheme.lower()
    if len(url) > MAX_URL or not found or not scheme.isalnum() or not url.isprintable():
        raise _invalid("url", "not an Apprise URL, e.g. ntfys://ntfy.example.org/topic")
    if scheme not in schemes:
        raise _invalid("url", f"the {scheme}:// service is not allowed here")
    service = apprise.Apprise.instantiate(url)
    if service is None:
        raise _invalid("url", f"Apprise cannot use this {scheme}:// URL")
    return service


def check_apprise_url(url: str, schemes: frozenset[str]) -> str:
    """Validate an Apprise URL; returns it with its credentials masked, to show."""
    return _masked(apprise_service(url, schemes))


def _masked(service: NotifyBase) -> str:
    masked: str = service.url(privacy=True)  # type: ignore[no-untyped-call]
    return masked.partition("?")[0]


# Apprise services that connect to the host their URL names (servers people run
# themselves). The others call their vendor's API at a fixed address and the URL's
# "host" is an id or a token there: discord://4174216298/... is no address to check.
_OWN_HOST_SCHEMES = frozenset(
    {"json", "jsons", "form", "forms", "xml", "xmls", "gotify", "gotifys"}
    | {"mmost", "mmosts", "rocket", "rockets"}
)


def apprise_host(scheme: str, service: NotifyBase) -> tuple[str, int] | None:
    """The host and port an Apprise service connects to, when its URL names them.

    ntfy names a host only in its private mode (``ntfy://topic`` is ntfy.sh); Matrix
    does except through t2bot. Services of other schemes are not checked.
    """
    mode = str(getattr(service, "mode", "") or "")
    own = (
        scheme in _OWN_HOST_SCHEMES
        or (scheme in ("ntfy", "ntfys") and mode == "private")
        or (scheme in ("matrix", "matrixs") and mode != "t2bot")
    )
    if not own or not service.host:
        return None
    return str(service.host), int(service.port or (443 if service.secure else 80))


def _apprise_checked(url: str, schemes: frozenset[str]) -> tuple[str, tuple[str, int] | None]:
    service = apprise_service(url, schemes)
    return _masked(service), apprise_host(url.partition("://")[0].lower(), service)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class Registrations:
    def __init__(
        self,
        book: AddressBook,
        store: Store,
        ids: IdFactory,
        clock: Clock,
        policy: RegistrationPolicy,
        resolver: Resolver = resolve,
    ) -> None:
        self._book = book
        self._store = store
        self._ids = ids
        self._clock = clock
        self.policy = policy
        self._resolver = resolver

    async def _add(
        self, user_id: str, kind: EndpointKind, url: str, **extra: Any
    ) -> tuple[Endpoint, bool]:
        """Register; (the endpoint, whether it is new): registering again is harmless."""
        await self._store.get_user(user_id)  # NotFound first
        endpoint = Endpoint(
            self._ids("ep"), user_id, kind, url, created_at=self._clock.now(), **extra
        )
        stored = await self._book.add_endpoint(endpoint)
        return stored, stored.id == endpoint.id

    async def endpoints(self, user_id: str, kind: EndpointKind) -> list[Endpoint]:
        await self._store.get_user(user_id)
        return await self._book.list_endpoints(user_id, kind)

    async def add_push_subscription(
        self, user_id: str, endpoint: str, p256dh: str, auth: str
    ) -> tuple[Endpoint, bool]:
        check_url(endpoint, allow_http=self.policy.allow_http_push, field_name="endpoint")
        check_push_keys(p256dh, auth)
        rules = self.policy.rules(EndpointKind.WEBPUSH)
        await check_url_target(endpoint, rules, "endpoint", self._resolver)
        keys = {"p256dh": p256dh, "auth": auth}
        return await self._add(
            user_id, EndpointKind.WEBPUSH, endpoint, keys=keys, label=_origin(endpoint)
        )

    async def add_webhook(self, user_id: str, url: str) -> tuple[Endpoint, bool]:
        check_url(url, allow_http=self.policy.allow_http_webhooks)
        await check_url_target(url, self.policy.rules(EndpointKind.WEBHOOK), "url", self._resolver)
        label = url if not urlsplit(url).password else _origin(url)
        keys = {"secret": new_webhook_secret()}
        return await self._add(user_id, EndpointKind.WEBHOOK, url, keys=keys, label=label)

    async def add_apprise_url(self, user_id: str, url: str) -> tuple[Endpoint, bool]:
        # Apprise parses on blocking code (its first use loads every plugin): off the loop.
        label, host = await asyncio.to_thread(_apprise_checked, url, self.policy.apprise_schemes)
        if host is not None:
            rules = self.policy.rules(EndpointKind.APPRISE)
            await check_host(*host, rules, "url", self._resolver)
        return await self._add(user_id, EndpointKind.APPRISE, url, label=label)

    async def remove(self, user_id: str, kind: EndpointKind, endpoint_id: str) -> None:
        await self._book.get_endpoint(user_id, kind, endpoint_id)  # NotFound first
        await self._refuse_last_in_use(user_id, kind)
        await self._book.delete_endpoint(user_id, kind, endpoint_id)

    async def remove_push_subscription(self, user_id: str, endpoint_url: str) -> None:
        found = await self.endpoints(user_id, EndpointKind.WEBPUSH)
        matching = self._matching(found, lambda e: e.url == endpoint_url)
        await self.remove(user_id, EndpointKind.WEBPUSH, matching.id)

    @staticmethod
    def _matching(found: Sequence[Endpoint], test: Callable[[Endpoint], bool]) -> Endpoint:
        for endpoint in found:
            if test(endpoint):
                return endpoint
        raise NotFound("no such push subscription", code="endpoint_not_found")

    async def _refuse_last_in_use(self, user_id: str, kind: EndpointKind) -> None:
        channel = next(ch for ch, k in CHANNEL_KINDS.items() if k is kind)
        if (await self._book.endpoint_counts(user_id)).get(kind, 0) > 1:
            return
        user = await self._store.get_user(user_id)
        if user.address_for(channel):  # a push token still reaches them
            return
        using = [
            s.category_id
            for s in await self._store.list_subscriptions(user_id)
            if channel in s.channels
        ]
        if using:
            raise InvalidInput(
                f"this is the user's last {kind.value} address and their subscription to"
                f" {', '.join(using)} uses the {channel} channel: remove {channel} there first",
                code="address_in_use",
                details={"channel": channel, "categories": using},
            )
