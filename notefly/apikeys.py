"""``notefly apikey create|list|revoke``: the API keys in the store.

A key is printed once, when it is created; the store keeps only its hash. Rotation
is create, deploy the new key, then revoke the old one: every process stops
accepting a revoked key within a few seconds (``NOTEFLY_AUTH_CACHE_SECONDS``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from notefly.auth import ApiKey, issue_api_key
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.errors import NoteflyError
from notefly.ports import Store


def add_arguments(
    parser: argparse.ArgumentParser, storage: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The actions; ``storage`` adds the options that choose the store to each."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key and print it (only this once)")
    create.add_argument("--name", required=True, help="who or what uses the key")
    kind = create.add_mutually_exclusive_group(required=True)
    kind.add_argument("--admin", action="store_true", help="everything: categories, users, ops")
    kind.add_argument(
        "--category",
        action="append",
        metavar="ID",
        help="a category the key may publish to (repeat for several)",
    )
    listing = actions.add_parser("list", help="the keys, without their secrets")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="ID")
    for action in (create, listing, revoke):
        storage(action)


def command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_with_store(settings, args))
    except NoteflyError as exc:
        print(f"notefly: {exc.message}", file=sys.stderr)
        return 1


async def _with_store(settings: Settings, args: argparse.Namespace) -> int:
    container = Container(settings=settings)
    await start(container.store)
    try:
        store: Store = await resolve(container.store)
        if args.action == "create":
            return await _create(store, args)
        if args.action == "list":
            return _list(await store.list_api_keys())
        revoked = await store.revoke_api_key(args.key_id)
        print(f"notefly: revoked {revoked.id} ({revoked.name})")
        return 0
    finally:
        await stop(container.store)


async def _create(store: Store, args: argparse.Namespace) -> int:
    key, secret_value = issue_api_key(args.name, admin=args.admin, categories=args.category or ())
    for category in key.categories:
        await store.get_category(category)  # a typo would make a key that can do nothing
    stored = await store.add_api_key(key)
    scope = "admin" if args.admin else "publisher: " + ", ".join(stored.categories)
    print(f"notefly: created {stored.id} ({stored.name}, {scope}). The key, shown only now:")
    print(secret_value)
    return 0


def _list(keys: list[ApiKey]) -> int:
    rows: list[tuple[Any, ...]] = [("id", "name", "kind", "categories", "created", "revoked")]
    for k in keys:
        created = k.created_at.strftime("%Y-%m-%d %H:%M") if k.created_at else "-"
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "-"
        rows.append((k.id, k.name, k.kind.value, ",".join(k.categories) or "-", created, revoked))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0
