"""The ``notefly`` command.

notefly up        broker and client in one process (the embedded default)
notefly broker    the broker alone        notefly client   the client alone
notefly demo      demo users, one message per category, and what each received
notefly publish   publish through a running broker
notefly migrate   apply pending schema migrations
notefly status    health, pending work and recent failures of a running broker
notefly apikey    create, list and revoke API keys (admin, publisher)
notefly bench     the benchmark suite (throughput, latency, memory) on loopback
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from notefly import __version__, apikeys, bench, demo, status, vapid
from notefly.auth import ensure_safe_binding
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.errors import ConfigurationError
from notefly.logs import configure_logging
from notefly.metrics import prepare_multiprocess_dir
from notefly.runner import Service, run
from notefly.supervisor import supervise


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
    up.add_argument(
        "--workers", type=int, help="processes (nodes) on this machine (the number of cores)"
    )
    up.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
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
    p.add_argument("--api-key", help="a publisher or admin key (default: NOTEFLY_API_KEY)")
    p = sub.add_parser("migrate", help="apply pending schema migrations")
    storage(p)
    p = sub.add_parser("keys", help="create the VAPID key pair of Web Push (kept if present)")
    storage(p)
    p = sub.add_parser("apikey", help="create, list and revoke API keys")
    apikeys.add_arguments(p, storage)
    p = sub.add_parser("status", help="health, pending work and recent failures of a broker")
    p.add_argument("--broker-url", help="http://127.0.0.1:5000 by default")
    p.add_argument("--json", action="store_true", help="the whole status as JSON, for scripts")
    p.add_argument("--api-key", help="an admin key, when keys are on (default: NOTEFLY_API_KEY)")
    bench.add_arguments(sub.add_parser("bench", help="benchmarks of the real services"))
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
        workers=args.workers,
    )
    workers = settings.workers or os.cpu_count() or 1
    if workers > 1 and args.worker_index is None:
        # Workers add up their metrics in one directory, so any of them answers /metrics
        # and the dashboard for all.
        os.environ.setdefault(
            "PROMETHEUS_MULTIPROC_DIR", str(prepare_multiprocess_dir(settings.data_dir / "metrics"))
        )
        _check_binding(settings, [settings.broker_host, settings.client_host])
        child = [a for a in sys.argv[1:] if not a.startswith("--worker-index")]
        return supervise(child, workers)
    if args.worker_index is not None:  # one of several nodes on this machine
        settings = settings.with_overrides(
            node_id=f"{settings.node}/{args.worker_index}", workers=workers
        )
    services = [
        Service("broker", settings.broker_host, settings.broker_port),
        Service("client", settings.client_host, settings.client_port),
    ]
    seed = args.demo and not args.worker_index  # one worker seeds the demo data
    asyncio.run(run(Container(settings=settings), services, seed_demo=seed, reuse_port=workers > 1))
    return 0


def _check_binding(settings: Settings, hosts: list[str]) -> None:
    """Refuse open mode off loopback before starting workers (each checks too)."""

    async def check() -> None:
        container = Container(settings=settings)
        await start(container.store)
        try:
            await ensure_safe_binding(await resolve(container.store), settings, hosts)
        finally:
            await stop(container.store)

    asyncio.run(check())


def _single(args: argparse.Namespace, settings: Settings) -> int:
    name = args.command
    settings = settings.with_overrides(**{f"{name}_host": args.host, f"{name}_port": args.port})
    host, port = getattr(settings, f"{name}_host"), getattr(settings, f"{name}_port")
    asyncio.run(run(Container(settings=settings), [Service(name, host, port)]))
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    # A node of its own: a running `notefly up` on the same store keeps its work.
    settings = settings.with_overrides(node_id=f"{socket.gethostname()}:demo:{os.getpid()}")
    return asyncio.run(_run_demo(Container(settings=settings)))


async def _run_demo(container: Container) -> int:
    await start(container.store)
    try:
        await start(container.actors)
        store = await resolve(container.store)
        users = await demo.seed_users(await resolve(container.directory), store)
        ids = await demo.publish_messages(await resolve(container.publisher))
        await demo.wait_delivered(store, ids, progress=demo.progress_bar(sys.stdout))
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
    headers = {"Content-Type": "application/json"}
    api_key = args.api_key or settings.env.get("NOTEFLY_API_KEY")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST", headers=headers
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
    print(f"notefly: schema of {settings.database_label} is up to date")
    return 0


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    public_key = vapid.create_keys(settings.data_dir)
    print(f"notefly: VAPID keys in {settings.data_dir}; public key (applicationServerKey):")
    print(public_key)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "up": _up,
    "broker": _single,
    "client": _single,
    "demo": _demo,
    "publish": _publish,
    "migrate": _migrate,
    "keys": _keys,
    "apikey": apikeys.command,
    "status": status.command,
    "bench": lambda args, _settings: bench.command(args),
}

if __name__ == "__main__":
    raise SystemExit(main())
