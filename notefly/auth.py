"""Who may call what: API keys, user tokens, principals and the route policy.

Framework-free: the services read the credential from the request, ask an
``Authenticator`` for the ``Principal`` behind it and check it against their route
table with ``authorize``.

Credentials are random secrets with a readable prefix: ``nfk_`` for API keys (an
admin key, or a publisher key limited to some categories) and ``nfu_`` for the token
a user gets when registering. Only their SHA-256 is stored. A salted, slow hash
(bcrypt, scrypt) protects low-entropy passwords against guessing; these secrets carry
256 random bits, so guessing is hopeless either way, and a fast hash lets every
request be checked with one indexed lookup. Comparisons go through
``hmac.compare_digest``.

Open mode: with no admin key configured and no API key in the store, everything is
allowed, as on a developer's machine. That is safe only on loopback, so a service in
open mode refuses to bind any other address (``ensure_safe_binding``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from notefly.config import Settings
from notefly.errors import ConfigurationError, InvalidInput, NoteflyError, NotFound
from notefly.provider_settings import ProviderSettings
from notefly.secrets import secret

KEY_PREFIX = "nfk_"
USER_TOKEN_PREFIX = "nfu_"
ADMIN_KEY_SETTING = "ADMIN_KEY"  # NOTEFLY_ADMIN_KEY, from the environment or secrets file
MIN_ADMIN_KEY_LENGTH = 32
_SECRET_BYTES = 32
_CACHE_LIMIT = 10_000


class Unauthenticated(NoteflyError):
    """No credential, or one that is unknown, revoked or replaced."""

    code = "unauthenticated"
    status = 401


class Forbidden(NoteflyError):
    """A valid credential that does not allow this request."""

    code = "forbidden"
    status = 403


# -- secrets ----------------------------------------------------------------------


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_user_token() -> str:
    return USER_TOKEN_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_secret(value: str) -> str:
    """What the store keeps of a key or token (see the module's docstring for why)."""
    return hashlib.sha256(value.encode()).hexdigest()


def secret_matches(value: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(value), stored_hash)


def csrf_token(signing_key: bytes, credential: str) -> str:
    """The anti-forgery token of the forms of whoever holds ``credential``.

    Derived, not stored: a page from this service knows it, a page of another site
    cannot compute it without the signing key.
    """
    return hmac.new(signing_key, b"csrf:" + credential.encode(), hashlib.sha256).hexdigest()


def csrf_valid(signing_key: bytes, credential: str, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(csrf_token(signing_key, credential), offered or "")


def same_origin(
    *, origin: str | None, fetch_site: str | None, host: str, scheme: str, required: bool = False
) -> bool:
    """Whether a browser says the request comes from this service's own pages.

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with form posts and ``fetch``;
    when they are present they must name this origin. ``required``: a request that
    has neither is refused too (for cookie-authenticated scripts, which always do).
    """
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    if origin is not None:
        return origin == f"{scheme}://{host}"
    return fetch_site is not None or not required


# -- keys and principals ----------------------------------------------------------


class KeyKind(StrEnum):
    ADMIN = "admin"  # everything: categories, users, operations
    PUBLISHER = "publisher"  # POST /pub to its categories, and reading those messages


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as the store keeps it: its hash, never the key itself."""

    id: str
    name: str
    kind: KeyKind
    categories: tuple[str, ...]  # a publisher's categories; empty for an admin key
    key_hash: str
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class Role(StrEnum):
    OPEN = "open"  # open mode: no keys configured, everything allowed
    ADMIN = "admin"
    PUBLISHER = "publisher"
    USER = "user"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. In open mode the role is OPEN, with the user of a valid user
    token if one came along (the /sub page shows that user)."""

    role: Role
    user_id: str | None = None
    categories: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.OPEN, Role.ADMIN)

    @property
    def is_anonymous(self) -> bool:
        return self.role is Role.ANONYMOUS

    def can_publish(self, category: str) -> bool:
        if self.is_admin:
            return True
        return self.role is Role.PUBLISHER and category.strip().lower() in self.categories

    def can_access_user(self, user_id: str) -> bool:
        if self.is_admin:
            return True
        return self.role is Role.USER and self.user_id is not None and self.user_id == user_id


ANONYMOUS = Principal(Role.ANONYMOUS)
OPEN = Principal(Role.OPEN)


def issue_api_key(name: str, *, admin: bool, categories: Iterable[str] = ()) -> tuple[ApiKey, str]:
    """A new key and its secret, to be shown once: the store keeps only the hash."""
    allowed = tuple(sorted({c.strip().lower() for c in categories if c.strip()}))
    if not name.strip():
        raise InvalidInput("name the key (who or what uses it)", code="validation_failed")
    if admin == bool(allowed):
        raise InvalidInput(
            "a key is either an admin key or a publisher key for some categories",
            code="validation_failed",
        )
    value = new_api_key()
    key = ApiKey(
        id="key_" + secrets.token_hex(6),
        name=name.strip(),
        kind=KeyKind.ADMIN if admin else KeyKind.PUBLISHER,
        categories=allowed,
        key_hash=hash_secret(value),
    )
    return key, value


def key_principal(key: ApiKey) -> Principal:
    if key.kind is KeyKind.ADMIN:
        return Principal(Role.ADMIN, key_id=key.id)
    return Principal(Role.PUBLISHER, categories=frozenset(key.categories), key_id=key.id)


# -- the route policy ---------------------------------------------------------------


class Access(StrEnum):
    OPEN = "open"  # anyone
    ADMIN = "admin"  # an admin key
    PUBLISH = "publish"  # an admin key, or a publisher key (its categories checked later)
    MESSAGE = "message"  # an admin key, or a publisher key of the message's category
    USER = "user"  # an admin key, or the token of the user named in the path
    USER_IN_BODY = "user_in_body"  # the same, the user named in the body
    REGISTER = "register"  # anyone while registration is open, else an admin key


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Access per route: exact ``(method, rule)`` entries first, then rule prefixes
    (any method). A route in neither is for admins only, so a new route is never
    open by accident."""

    exact: Mapping[tuple[str, str], Access]
    prefixes: Sequence[tuple[str, Access]] = ()

    def lookup(self, method: str, rule: str) -> Access | None:
        method = "GET" if method == "HEAD" else method
        found = self.exact.get((method, rule))
        if found is not None:
            return found
        for prefix, access in sorted(self.prefixes, key=lambda p: -len(p[0])):
            if rule == prefix or rule.startswith(prefix.rstrip("/") + "/"):
                return access
        return None

    def protected(self, method: str, rule: str) -> bool:
        """Whether the route needs a credential once keys are on (the API docs say so)."""
        return self.access(method, rule) not in (Access.OPEN, Access.REGISTER)

    def access(self, method: str, rule: str) -> Access:
        return self.lookup(method, rule) or Access.ADMIN


# What both services serve to anyone: the index, probes, metrics, API docs, assets and
# the catalogue of categories.
SERVICE_OPEN: Mapping[tuple[str, str], Access] = {
    ("GET", "/"): Access.OPEN,
    ("GET", "/healthz"): Access.OPEN,
    ("GET", "/readyz"): Access.OPEN,
    ("GET", "/metrics"): Access.OPEN,
    ("GET", "/openapi.json"): Access.OPEN,
    ("GET", "/categories"): Access.OPEN,
}
SERVICE_OPEN_PREFIXES: tuple[tuple[str, Access], ...] = (
    ("/docs", Access.OPEN),
    ("/static", Access.OPEN),
)


def authorize(
    principal: Principal,
    access: Access,
    *,
    user_id: str | None = None,
    open_registration: bool = True,
) -> None:
    """Raise ``Unauthenticated`` or ``Forbidden`` unless ``principal`` may pass.

    ``user_id``: the user a USER or USER_IN_BODY route acts on. Category checks of
    PUBLISH and MESSAGE routes need the message and happen after this."""
    if access is Access.REGISTER:
        access = Access.OPEN if open_registration else Access.ADMIN
    if access is Access.OPEN or principal.role is Role.OPEN:
        return
    if principal.is_anonymous:
        raise Unauthenticated("this needs a key or a user token: Authorization: Bearer …")
    if principal.is_admin:
        return
    allowed = {
        Access.ADMIN: False,
        Access.PUBLISH: principal.role is Role.PUBLISHER,
        Access.MESSAGE: principal.role is Role.PUBLISHER,
        Access.USER: user_id is not None and principal.can_access_user(user_id),
        Access.USER_IN_BODY: user_id is not None and principal.can_access_user(user_id),
    }[access]
    if not allowed:
        raise Forbidden(f"this {principal.role.value} credential does not allow this request")


def require_category(principal: Principal, category: str) -> None:
    if not principal.can_publish(category):
        raise Forbidden(
            f"this key may not publish to or read category {category!r}",
            code="category_forbidden",
        )


# -- resolving credentials ----------------------------------------------------------


class KeyStore(Protocol):
    """What the authenticator reads from the store (a part of ``Store``)."""

    async def api_key_by_hash(self, key_hash: str) -> ApiKey: ...
    async def user_by_token(self, token_hash: str) -> str: ...
    async def active_api_keys(self) -> int: ...


def admin_key_hash(settings: Settings) -> str | None:
    """The hash of ``NOTEFLY_ADMIN_KEY``, or None when it is not set."""
    configured = secret(settings, ADMIN_KEY_SETTING)
    if configured is None:
        return None
    if len(configured.reveal()) < MIN_ADMIN_KEY_LENGTH:
        raise ConfigurationError(
            f"NOTEFLY_{ADMIN_KEY_SETTING} is too short: use at least {MIN_ADMIN_KEY_LENGTH}"
            " random characters (e.g. from `notefly apikey create --admin`)"
        )
    return hash_secret(configured.reveal())


def authenticators(settings: Settings) -> Callable[[KeyStore], Authenticator]:
    """Reads the settings now (a malformed admin key stops start-up here) and returns
    what makes the authenticator once the store is up."""
    ttl = ProviderSettings(settings, "AUTH", "access control").seconds("CACHE_SECONDS", 2.0)
    admin_hash = admin_key_hash(settings)
    return lambda store: Authenticator(store, admin_hash, ttl=ttl)


class Authenticator:
    """Resolves credentials to principals, remembering answers for ``ttl`` seconds.

    The memory keeps each request to one dictionary lookup; a revoked key or a
    replaced token stops working within ``ttl`` on every process, at once on this one
    when ``forget_user`` is told."""

    def __init__(
        self,
        store: KeyStore,
        admin_hash: str | None,
        *,
        ttl: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._admin_hash = admin_hash
        self._ttl = ttl
        self._monotonic = monotonic
        self._known: dict[str, tuple[float, Principal | None]] = {}
        self._open: tuple[float, bool] | None = None

    async def open_mode(self) -> bool:
        if self._admin_hash is not None:
            return False
        now = self._monotonic()
        if self._open is None or self._open[0] <= now:
            self._open = (now + self._ttl, await self._store.active_api_keys() == 0)
        return self._open[1]

    async def principal(self, credential: str | None) -> Principal:
        """The principal of ``credential``; raises ``Unauthenticated`` for a credential
        that is not valid, except in open mode, where everything passes anyway."""
        is_open = await self.open_mode()
        if not credential:
            return OPEN if is_open else ANONYMOUS
        found = await self._lookup(credential)
        if is_open:
            return replace(OPEN, user_id=found.user_id if found else None)
        if found is None:
            raise Unauthenticated("the key or token is not valid (unknown, revoked or replaced)")
        return found

    async def principal_of_cookie(self, credential: str | None, via_cookie: bool) -> Principal:
        """Like ``principal``, but a stale cookie (key revoked, token replaced, user
        erased) leaves a stranger, who can still reach a sign-in form; the routes that
        need someone answer 401 as usual."""
        try:
            return await self.principal(credential)
        except Unauthenticated:
            if not via_cookie:
                raise
            return ANONYMOUS

    def forget_user(self, user_id: str) -> None:
        """Drop what is remembered of ``user_id``'s tokens (theirs was just replaced)."""
        for digest, (_, known) in list(self._known.items()):
            if known is not None and known.user_id == user_id:
                del self._known[digest]

    def forget_all(self) -> None:
        self._known.clear()
        self._open = None

    async def _lookup(self, credential: str) -> Principal | None:
        digest = hash_secret(credential)
        now = self._monotonic()
        remembered = self._known.get(digest)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        found = await self._resolve(credential, digest)
        if len(self._known) >= _CACHE_LIMIT:
            self._known.clear()
        self._known[digest] = (now + self._ttl, found)
        return found

    async def _resolve(self, credential: str, digest: str) -> Principal | None:
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return Principal(Role.ADMIN, key_id="env")
        # The store finds the row by its hash (an index lookup); the timing of that
        # lookup reveals nothing useful about a 256-bit secret.
        if credential.startswith(USER_TOKEN_PREFIX):
            try:
                return Principal(Role.USER, user_id=await self._store.user_by_token(digest))
            except NotFound:
                return None
        try:
            key = await self._store.api_key_by_hash(digest)
        except NotFound:
            return None
        return key_principal(key) if key.active else None


# -- binding ------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


async def ensure_safe_binding(store: KeyStore, settings: Settings, hosts: Iterable[str]) -> None:
    """Refuse to serve in open mode on any address but loopback."""
    exposed = sorted({h for h in hosts if not is_loopback(h)})
    if not exposed or admin_key_hash(settings) is not None:
        return
    if await store.active_api_keys() > 0:
        return
    raise ConfigurationError(
        f"refusing to listen on {', '.join(exposed)} without access control: no admin key"
        f" and no API key exists, so anyone could publish and read every user's data. Set"
        f" NOTEFLY_{ADMIN_KEY_SETTING} (32+ random characters) or create a key with"
        " `notefly apikey create --admin --name NAME`, or bind 127.0.0.1"
    )
