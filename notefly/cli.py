"""The ``notefly`` command.

notefly up        broker and client in one process (the embedded default)
notefly broker    the broker alone        notefly client   the client alone
notefly demo      demo users, one message per category, and what each received
notefly publish   publish through a running broker
notefly migrate   apply pending schema migrations
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from notefly import __version__, demo
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.errors import ConfigurationError
from notefly.logs import configure_logging
from notefly.runner import Service, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notefly", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"notefly {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def storage(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help="where the SQLite file lives (.notefly)")
        p.add_argument("--database-url", help="sqlite:///path/to/file.db")

    up = sub.add_parser("up", help="broker and client in one process")
    up.add_argument("--host", help="address of both services (127.0.0.1)")
    up.add_argument("--broker-port", type=int, help="broker port (5000)")
    up.add_argument("--client-port", type=int, help="client port (5001)")
    up.add_argument("--demo", action="store_true", help="register demo users and publish")
    storage(up)
    for name, port in (("broker", 5000), ("client", 5001)):
        p = sub.add_parser(name, help=f"the {name} service alone")
        p.add_argument("--host", help="address to bind (127.0.0.1)")
        p.add_argument("--port", type=int, help=f"port ({port})")
        storage(p)
    p = sub.add_parser("demo", help="demo users, one message per category, what each got")
    storage(p)
    p = sub.add_parser("publish", help="publish a message through a running broker")
    p.add_argument("category")
    p.add_argument("message")
    p.add_argument("--title")
    p.add_argument("--priority", choices=["low", "normal", "high", "urgent"], default="normal")
    p.add_argument("--idempotency-key")
    p.add_argument("--broker-url", help="http://127.0.0.1:5000 by default")
    p = sub.add_parser("migrate", help="apply pending schema migrations")
    storage(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env().with_overrides(
            data_dir=getattr(args, "data_dir", None),
            database_url=getattr(args, "database_url", None),
        )
        configure_logging(settings.log_format, settings.log_level)
        return _COMMANDS[args.command](args, settings)
    except ConfigurationError as exc:
        print(f"notefly: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _up(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.with_overrides(
        broker_host=args.host,
        client_host=args.host,
        broker_port=args.broker_port,
        client_port=args.client_port,
    )
    services = [
        Service("broker", settings.broker_host, settings.broker_port),
        Service("client", settings.client_host, settings.client_port),
    ]
    asyncio.run(run(Container(settings=settings), services, seed_demo=args.demo))
    return 0


def _single(args: argparse.Namespace, settings: Settings) -> int:
    name = args.command
    host = args.host or getattr(settings, f"{name}_host")
    port = args.port or getattr(settings, f"{name}_port")
    asyncio.run(run(Container(settings=settings), [Service(name, host, port)]))
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run_demo(Container(settings=settings)))


async def _run_demo(container: Container) -> int:
    await start(container.store)
    try:
        await start(container.actors)
        store = await resolve(container.store)
        users = await demo.seed_users(await resolve(container.directory), store)
        ids = await demo.publish_messages(await resolve(container.publisher))
        await demo.wait_delivered(store, ids)
        print(f"{'user':<8} {'category':<9} {'channel':<6} {'to':<22} text")
        names = {u.id: u.name for u in users}
        for message_id in ids:
            for d in await store.list_deliveries(message_id):
                if d.user_id not in names:
                    continue
                text = (d.text or d.error or "").replace("\n", " ")[:60]
                category = (await store.get_message(message_id)).category_id
                print(
                    f"{names[d.user_id]:<8} {category:<9} {d.channel:<6} "
                    f"{d.recipient or '-':<22} {d.status.value}: {text}"
                )
    finally:
        await stop(container.actors)
        await stop(container.store)
    return 0


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    url = (args.broker_url or f"http://{settings.broker_host}:{settings.broker_port}") + "/pub"
    payload = {"category": args.category, "body": args.message, "priority": args.priority}
    if args.title:
        payload["title"] = args.title
    if args.idempotency_key:
        payload["idempotency_key"] = args.idempotency_key
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(json.dumps(json.load(response), indent=2))
            return 0
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            error = json.loads(body)["error"]
            print(f"notefly: {exc.code} {error['code']}: {error['message']}", file=sys.stderr)
        except (ValueError, KeyError, TypeError):
            print(f"notefly: {exc.code}: {body[:200]}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"notefly: cannot reach the broker at {url}: {exc.reason}", file=sys.stderr)
        return 1


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def apply() -> None:
        container = Container(settings=settings)
        await start(container.store)
        await stop(container.store)

    asyncio.run(apply())
    print(f"notefly: schema of {settings.sqlite_path} is up to date")
    return 0


_COMMANDS = {
    "up": _up,
    "broker": _single,
    "client": _single,
    "demo": _demo,
    "publish": _publish,
    "migrate": _migrate,
}

if __name__ == "__main__":
    raise SystemExit(main())
