"""API keys and user tokens: the same answers from every backend."""

from __future__ import annotations

import pytest

from notefly.auth import KeyKind, hash_secret, issue_api_key, new_user_token
from notefly.domain import User
from notefly.errors import Conflict, NotFound
from notefly.ports import Store
from tests.contract.audience import FakeClock
from tests.contract.conftest import Backend


async def test_a_key_is_stored_by_its_hash_and_found_by_it(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    key, secret_value = issue_api_key("newsroom", admin=False, categories=["Finance", "sports"])
    stored = await store.add_api_key(key)
    assert stored.created_at == clock.now()
    assert stored.revoked_at is None

    found = await store.api_key_by_hash(hash_secret(secret_value))
    assert (found.id, found.name, found.kind) == (key.id, "newsroom", KeyKind.PUBLISHER)
    assert found.categories == ("finance", "sports")
    assert found.active
    # Nothing of the secret itself reaches the database.
    rows = await backend.query("SELECT id, name, kind, key_hash FROM api_keys")
    assert rows == [(key.id, "newsroom", "publisher", hash_secret(secret_value))]
    assert secret_value not in repr(await backend.query("SELECT * FROM api_keys"))


async def test_an_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.api_key_by_hash(hash_secret("nfk_nothing"))
    assert caught.value.code == "api_key_not_found"


async def test_a_duplicate_key_id_conflicts(store: Store) -> None:
    key, _ = issue_api_key("ops", admin=True)
    await store.add_api_key(key)
    with pytest.raises(Conflict):
        await store.add_api_key(key)


async def test_revoking_keeps_the_key_listed_but_inactive(store: Store, clock: FakeClock) -> None:
    first, first_secret = issue_api_key("ops", admin=True)
    second, _ = issue_api_key("feed", admin=False, categories=["movies"])
    await store.add_api_key(first)
    clock.advance(5)
    await store.add_api_key(second)
    assert await store.active_api_keys() == 2

    clock.advance(60)
    revoked = await store.revoke_api_key(first.id)
    assert revoked.revoked_at == clock.now()
    assert not revoked.active
    assert await store.active_api_keys() == 1
    assert not (await store.api_key_by_hash(hash_secret(first_secret))).active

    # Revoking again keeps the first revocation time.
    when = clock.now()
    clock.advance(60)
    assert (await store.revoke_api_key(first.id)).revoked_at == when

    listed = await store.list_api_keys()
    assert [(k.id, k.active) for k in listed] == [(first.id, False), (second.id, True)]


async def test_revoking_an_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.revoke_api_key("key_missing")


async def test_a_user_token_finds_its_user_until_replaced(store: Store, backend: Backend) -> None:
    await store.add_user(User("u1", "Ada"))
    await store.add_user(User("u2", "Bo"))
    old, new = new_user_token(), new_user_token()
    await store.set_user_token("u1", hash_secret(old))
    assert await store.user_by_token(hash_secret(old)) == "u1"

    await store.set_user_token("u1", hash_secret(new))
    assert await store.user_by_token(hash_secret(new)) == "u1"
    with pytest.raises(NotFound):
        await store.user_by_token(hash_secret(old))
    assert await backend.query("SELECT token_hash FROM users WHERE id = 'u1'") == [
        (hash_secret(new),)
    ]


async def test_a_token_for_an_unknown_user_is_refused(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.set_user_token("nobody", hash_secret(new_user_token()))
    assert caught.value.code == "user_not_found"


async def test_a_deleted_users_token_stops_working(store: Store) -> None:
    await store.add_user(User("u1", "Ada"))
    token = new_user_token()
    await store.set_user_token("u1", hash_secret(token))
    await store.delete_user("u1")
    with pytest.raises(NotFound):
        await store.user_by_token(hash_secret(token))
