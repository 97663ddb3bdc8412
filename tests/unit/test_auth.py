"""Keys, hashes, principals, the route policy and the authenticator, without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notefly.auth import (
    ANONYMOUS,
    OPEN,
    Access,
    ApiKey,
    Authenticator,
    Forbidden,
    KeyKind,
    Principal,
    Role,
    RouteTable,
    Unauthenticated,
    admin_key_hash,
    authorize,
    csrf_token,
    csrf_valid,
    ensure_safe_binding,
    hash_secret,
    is_loopback,
    issue_api_key,
    new_api_key,
    new_user_token,
    require_category,
    same_origin,
    secret_matches,
)
from notefly.config import Settings
from notefly.errors import ConfigurationError, InvalidInput, NotFound

ADMIN_KEY = "an-admin-key-of-forty-characters-or-so-x"


class FakeKeyStore:
    """Keys and tokens in dictionaries, by hash, as the store keeps them."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.tokens: dict[str, str] = {}
        self.lookups = 0

    def add(self, key: ApiKey) -> None:
        self.keys[key.key_hash] = key

    async def api_key_by_hash(self, key_hash: str) -> ApiKey:
        self.lookups += 1
        if key_hash not in self.keys:
            raise NotFound("no such API key")
        return self.keys[key_hash]

    async def user_by_token(self, token_hash: str) -> str:
        self.lookups += 1
        if token_hash not in self.tokens:
            raise NotFound("no user has this token")
        return self.tokens[token_hash]

    async def active_api_keys(self) -> int:
        return sum(1 for k in self.keys.values() if k.active)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- secrets -------------------------------------------------------------------------


def test_keys_and_tokens_are_random_with_a_readable_prefix() -> None:
    keys = {new_api_key() for _ in range(50)}
    tokens = {new_user_token() for _ in range(50)}
    assert len(keys) == 50 and len(tokens) == 50
    assert all(k.startswith("nfk_") and len(k) >= 40 for k in keys)
    assert all(t.startswith("nfu_") and len(t) >= 40 for t in tokens)


def test_the_hash_is_sha256_and_matching_needs_the_exact_secret() -> None:
    key = new_api_key()
    digest = hash_secret(key)
    assert len(digest) == 64 and key not in digest
    assert secret_matches(key, digest)
    assert not secret_matches(key + "x", digest)
    assert not secret_matches(key[:-1], digest)


def test_an_issued_key_keeps_only_the_hash_and_normalises_categories() -> None:
    key, value = issue_api_key(" newsroom ", admin=False, categories=["Finance", "sports", " "])
    assert key.kind is KeyKind.PUBLISHER
    assert key.categories == ("finance", "sports")
    assert key.name == "newsroom"
    assert key.key_hash == hash_secret(value)
    assert value not in repr(key)

    admin, _ = issue_api_key("ops", admin=True)
    assert (admin.kind, admin.categories) == (KeyKind.ADMIN, ())


@pytest.mark.parametrize(
    ("name", "admin", "categories"),
    [("", True, []), ("both", True, ["finance"]), ("neither", False, [])],
)
def test_a_key_must_be_named_and_either_admin_or_for_categories(
    name: str, admin: bool, categories: list[str]
) -> None:
    with pytest.raises(InvalidInput):
        issue_api_key(name, admin=admin, categories=categories)


def test_the_csrf_token_is_bound_to_the_credential_and_the_signing_key() -> None:
    token = csrf_token(b"k" * 32, "nfu_abc")
    assert csrf_valid(b"k" * 32, "nfu_abc", token)
    assert not csrf_valid(b"k" * 32, "nfu_other", token)
    assert not csrf_valid(b"j" * 32, "nfu_abc", token)
    assert not csrf_valid(b"k" * 32, "nfu_abc", None)
    assert not csrf_valid(b"k" * 32, "nfu_abc", "")


def test_same_origin_reads_what_the_browser_says() -> None:
    here = {"host": "127.0.0.1:5001", "scheme": "http"}
    assert same_origin(origin=None, fetch_site=None, **here)
    assert same_origin(origin="http://127.0.0.1:5001", fetch_site="same-origin", **here)
    assert not same_origin(origin="http://127.0.0.1:5000", fetch_site=None, **here)
    assert not same_origin(origin="null", fetch_site=None, **here)
    assert not same_origin(origin=None, fetch_site="cross-site", **here)
    assert not same_origin(origin=None, fetch_site="same-site", **here)
    assert not same_origin(origin=None, fetch_site=None, required=True, **here)


# -- principals and policy ---------------------------------------------------------


def test_principals_can_do_what_their_role_allows() -> None:
    publisher = Principal(Role.PUBLISHER, categories=frozenset({"finance"}))
    user = Principal(Role.USER, user_id="usr_a")
    admin = Principal(Role.ADMIN)
    assert publisher.can_publish("finance") and publisher.can_publish("Finance")
    assert not publisher.can_publish("sports")
    assert not user.can_publish("finance")
    assert admin.can_publish("sports") and OPEN.can_publish("sports")
    assert user.can_access_user("usr_a") and not user.can_access_user("usr_b")
    assert not publisher.can_access_user("usr_a")
    assert admin.can_access_user("usr_b") and admin.is_admin
    assert not ANONYMOUS.can_access_user("usr_a")
    with pytest.raises(Forbidden):
        require_category(publisher, "sports")
    require_category(publisher, "finance")


def test_authorize_tells_missing_credentials_from_insufficient_ones() -> None:
    user = Principal(Role.USER, user_id="usr_a")
    publisher = Principal(Role.PUBLISHER, categories=frozenset({"finance"}))
    authorize(ANONYMOUS, Access.OPEN)
    authorize(OPEN, Access.ADMIN)  # open mode
    with pytest.raises(Unauthenticated):
        authorize(ANONYMOUS, Access.USER, user_id="usr_a")
    with pytest.raises(Forbidden):
        authorize(user, Access.USER, user_id="usr_b")
    with pytest.raises(Forbidden):
        authorize(user, Access.USER_IN_BODY, user_id=None)
    authorize(user, Access.USER, user_id="usr_a")
    authorize(user, Access.USER_IN_BODY, user_id="usr_a")
    with pytest.raises(Forbidden):
        authorize(user, Access.PUBLISH)
    authorize(publisher, Access.PUBLISH)
    authorize(publisher, Access.MESSAGE)
    with pytest.raises(Forbidden):
        authorize(publisher, Access.ADMIN)
    with pytest.raises(Forbidden):
        authorize(publisher, Access.USER, user_id="usr_a")
    authorize(Principal(Role.ADMIN), Access.USER, user_id="usr_b")


def test_registration_is_open_unless_switched_off() -> None:
    authorize(ANONYMOUS, Access.REGISTER)
    with pytest.raises(Unauthenticated):
        authorize(ANONYMOUS, Access.REGISTER, open_registration=False)
    with pytest.raises(Forbidden):
        authorize(Principal(Role.USER, user_id="u"), Access.REGISTER, open_registration=False)
    authorize(Principal(Role.ADMIN), Access.REGISTER, open_registration=False)


def test_the_route_table_matches_exactly_then_by_prefix_else_admin_only() -> None:
    table = RouteTable(
        exact={("GET", "/users"): Access.ADMIN, ("POST", "/users"): Access.REGISTER},
        prefixes=(("/users/<user_id>", Access.USER), ("/docs", Access.OPEN)),
    )
    assert table.access("POST", "/users") is Access.REGISTER
    assert table.access("HEAD", "/users") is Access.ADMIN
    assert table.access("DELETE", "/users/<user_id>") is Access.USER
    assert table.access("GET", "/users/<user_id>/export") is Access.USER
    assert table.access("GET", "/docs/static/<name>") is Access.OPEN
    assert table.lookup("GET", "/docsify") is None
    assert table.access("GET", "/docsify") is Access.ADMIN
    assert table.lookup("POST", "/brand-new") is None


# -- the authenticator -----------------------------------------------------------------


async def test_without_keys_everything_is_open_and_a_key_ends_open_mode() -> None:
    store, clock = FakeKeyStore(), FakeMonotonic()
    auth = Authenticator(store, None, ttl=2.0, monotonic=clock)
    assert await auth.open_mode()
    assert (await auth.principal(None)).role is Role.OPEN
    assert (await auth.principal("nfk_whatever")).role is Role.OPEN

    key, value = issue_api_key("ops", admin=True)
    store.add(key)
    clock.now += 2.5
    assert not await auth.open_mode()
    assert await auth.principal(None) == ANONYMOUS
    assert (await auth.principal(value)).role is Role.ADMIN


async def test_an_admin_key_from_the_environment_is_compared_by_hash() -> None:
    store = FakeKeyStore()
    auth = Authenticator(store, hash_secret(ADMIN_KEY), monotonic=FakeMonotonic())
    assert not await auth.open_mode()
    assert (await auth.principal(ADMIN_KEY)).role is Role.ADMIN
    with pytest.raises(Unauthenticated):
        await auth.principal(ADMIN_KEY + "x")


async def test_user_tokens_and_publisher_keys_resolve_to_their_principals() -> None:
    store = FakeKeyStore()
    key, value = issue_api_key("feed", admin=False, categories=["movies"])
    store.add(key)
    token = new_user_token()
    store.tokens[hash_secret(token)] = "usr_a"
    auth = Authenticator(store, None, monotonic=FakeMonotonic())
    assert await auth.principal(token) == Principal(Role.USER, user_id="usr_a")
    found = await auth.principal(value)
    assert (found.role, found.categories, found.key_id) == (
        Role.PUBLISHER,
        frozenset({"movies"}),
        key.id,
    )
    with pytest.raises(Unauthenticated):
        await auth.principal(new_user_token())


async def test_a_revoked_key_stops_working_once_the_memory_expires() -> None:
    store, clock = FakeKeyStore(), FakeMonotonic()
    key, value = issue_api_key("ops", admin=True)
    spare, _ = issue_api_key("spare", admin=True)
    store.add(key)
    store.add(spare)
    auth = Authenticator(store, None, ttl=2.0, monotonic=clock)
    assert (await auth.principal(value)).role is Role.ADMIN
    lookups = store.lookups
    assert (await auth.principal(value)).role is Role.ADMIN
    assert store.lookups == lookups  # remembered: no second lookup

    store.add(replace(key, revoked_at=datetime(2026, 1, 1, tzinfo=UTC)))
    clock.now += 1.0
    assert (await auth.principal(value)).role is Role.ADMIN  # still remembered
    clock.now += 1.5
    with pytest.raises(Unauthenticated):
        await auth.principal(value)


async def test_forgetting_a_user_drops_their_replaced_token_at_once() -> None:
    store = FakeKeyStore()
    spare, _ = issue_api_key("spare", admin=True)
    store.add(spare)  # keys exist: not open mode
    old = new_user_token()
    store.tokens[hash_secret(old)] = "usr_a"
    auth = Authenticator(store, None, ttl=60.0, monotonic=FakeMonotonic())
    assert (await auth.principal(old)).user_id == "usr_a"
    del store.tokens[hash_secret(old)]
    auth.forget_user("usr_a")
    with pytest.raises(Unauthenticated):
        await auth.principal(old)


# -- binding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_open_mode_refuses_any_address_but_loopback(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = FakeKeyStore()
    await ensure_safe_binding(store, settings, ["127.0.0.1", "localhost"])
    with pytest.raises(ConfigurationError) as caught:
        await ensure_safe_binding(store, settings, ["127.0.0.1", "0.0.0.0"])
    assert "NOTEFLY_ADMIN_KEY" in caught.value.message
    assert "notefly apikey create" in caught.value.message

    with_env = Settings(data_dir=tmp_path, env={"NOTEFLY_ADMIN_KEY": ADMIN_KEY})
    await ensure_safe_binding(store, with_env, ["0.0.0.0"])
    key, _ = issue_api_key("ops", admin=True)
    store.add(key)
    await ensure_safe_binding(store, settings, ["0.0.0.0"])


def test_a_short_admin_key_stops_start_up(tmp_path: Path) -> None:
    assert admin_key_hash(Settings(data_dir=tmp_path)) is None
    assert admin_key_hash(
        Settings(data_dir=tmp_path, env={"NOTEFLY_ADMIN_KEY": ADMIN_KEY})
    ) == hash_secret(ADMIN_KEY)
    with pytest.raises(ConfigurationError) as caught:
        admin_key_hash(Settings(data_dir=tmp_path, env={"NOTEFLY_ADMIN_KEY": "short"}))
    assert "short" not in caught.value.message.replace("too short", "")
