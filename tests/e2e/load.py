"""What the crash and shutdown tests share: a webhook receiver that outlives the broker,
publishers that keep count of what was accepted, and a read-only view of the store.

The receiver runs in the test process, so what it saw survives every SIGKILL of the
broker: it is the provider's side of the story. The publishers send every message with
an idempotency key, so that a request whose answer was lost in a crash can be looked up
in the store afterwards.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notefly.store.sqlite_flight import IN_FLIGHT
from tests.contract.postgres_server import reach_server, run_sync

# -- the provider's side ---------------------------------------------------------------


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers 200 to every webhook and counts each
    ``webhook-id`` (the delivery id) it receives.

    Each user gets a path of its own (``url_for``); once its signing secret is known
    (``secrets``), every webhook on that path must carry a valid Standard Webhooks
    signature, and one that does not is kept in ``forged``.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # seconds each answer takes: a slow provider
        self.secrets: dict[str, str] = {}  # path -> the endpoint's whsec_ secret
        self.forged: list[str] = []  # delivery ids whose signature did not verify
        self.seen: Counter[str] = Counter()
        self.messages: dict[str, str] = {}  # delivery id -> message id of its payload
        self.times: dict[str, list[float]] = {}  # delivery id -> when it arrived, each time
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the provider's client expects

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.record(self.path, dict(self.headers.items()), body)
                time.sleep(receiver.delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # thousands of requests: keep the test output readable

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a killed broker resets its connections: expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url_for(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook/{name}"

    def record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        headers = {k.lower(): v for k, v in headers.items()}
        delivery_id = headers.get("webhook-id", "")
        message_id = json.loads(body)["data"]["message_id"]
        try:
            Webhook(self.secrets[path.removeprefix("/hook/")]).verify(body, headers)
        except (KeyError, WebhookVerificationError):
            with self._lock:
                self.forged.append(delivery_id)
        with self._lock:
            self.seen[delivery_id] += 1
            self.messages[delivery_id] = message_id
            self.times.setdefault(delivery_id, []).append(time.time())

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self.seen)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def recorded(log: Path) -> Counter[str]:
    """How often the log providers recorded each delivery id, from a node's JSON log.

    A process killed mid-write may leave a torn last line; it is skipped (the delivery
    it named was not recorded as sent either, so it goes out again).
    """
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "notification.recorded":
            counts[event["delivery_id"]] += 1
    return counts


# -- the publishers' side --------------------------------------------------------------


@dataclass
class Attempt:
    key: str
    started: float  # time.time() just before the request was sent
    status: int | None  # None: no answer (the connection failed or was cut)
    message_id: str | None = None


@dataclass
class PublishLoad:
    """Concurrent publishers over HTTP, each message carrying its idempotency key.

    A 202 is accepted. A refused connection never reached the broker and is tried
    again until ``connect_deadline`` or ``halt()``; a request cut off after it was sent
    is *unknown* (it may or may not have been committed) and the publisher moves on.
    429 and 503 are retried after their Retry-After.
    """

    broker_url: str
    keys: list[str]
    category_of: Callable[[int], str]
    publishers: int = 4
    connect_deadline: float = 60.0  # seconds a publisher waits for a broker to come back
    accepted: dict[str, str] = field(default_factory=dict)  # key -> message id
    unknown: set[str] = field(default_factory=set)
    refused: list[Attempt] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0  # requests answered or cut off so far
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _halt: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        for p in range(self.publishers):
            mine = list(range(p, len(self.keys), self.publishers))
            thread = threading.Thread(target=self._run, args=(mine,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def halt(self) -> None:
        self._halt.set()

    def join(self, within: float) -> None:
        deadline = time.monotonic() + within
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        assert not alive, f"{alive} publishers still running after {within}s"
        assert not self.errors, f"publishers failed: {self.errors[:5]}"

    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _run(self, numbers: list[int]) -> None:
        try:
            with httpx.Client(base_url=self.broker_url, timeout=30) as http:
                for n in numbers:
                    if self._halt.is_set() or not self._publish(http, n):
                        return
        except Exception as exc:  # reported by join(), never lost with the thread
            with self._lock:
                self.errors.append(repr(exc))

    def _publish(self, http: httpx.Client, n: int) -> bool:
        """Publish message ``n``; False when the publisher should stop."""
        key = self.keys[n]
        payload = {"category": self.category_of(n), "body": f"message {n}", "idempotency_key": key}
        refused_since: float | None = None
        while not self._halt.is_set():
            started = time.time()
            try:
                response = http.post("/pub", json=payload)
            except httpx.ConnectError:
                attempt = Attempt(key, started, None)
                with self._lock:
                    self.refused.append(attempt)
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since > self.connect_deadline:
                    raise AssertionError(
                        f"the broker refused connections for {self.connect_deadline}s"
                    ) from None
                time.sleep(0.05)
                continue
            except httpx.TransportError:
                with self._lock:
                    self.unknown.add(key)
                    self.attempts.append(Attempt(key, started, None))
                    self.sent += 1
                return True
            if response.status_code in (429, 503):
                with self._lock:
                    self.attempts.append(Attempt(key, started, response.status_code))
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 2.0))
                continue
            if response.status_code != 202:
                raise AssertionError(f"POST /pub answered {response.status_code}: {response.text}")
            message_id = response.json()["id"]
            with self._lock:
                self.accepted[key] = message_id
                self.unknown.discard(key)
                self.attempts.append(Attempt(key, started, 202, message_id))
                self.sent += 1
            return True
        return False


# -- the store, read as another process would --------------------------------------------


class StoreView:
    """Read-only queries on the store the broker uses; ``?`` marks a parameter."""

    def __init__(self, sqlite_path: Path | None = None, postgres_url: str | None = None):
        self.sqlite_path = sqlite_path
        self.postgres_url = postgres_url

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.postgres_url is None:
            assert self.sqlite_path is not None
            with closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
                return conn.execute(sql, params).fetchall()
        return run_sync(lambda: self._pg_query(sql, params))

    async def _pg_query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import asyncpg

        parts = sql.split("?")
        numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
        conn = await asyncpg.connect(self.postgres_url, timeout=10)
        try:
            return [tuple(row) for row in await conn.fetch(numbered, *params)]
        finally:
            await conn.close()

    def unfinished(self) -> int:
        """Fan-outs not done plus deliveries still queued (on SQLite, with those of
        pages in flight, which have no rows yet)."""
        in_flight = f" + ({IN_FLIGHT})" if self.postgres_url is None else ""
        rows = self.query(
            "SELECT (SELECT count(*) FROM messages WHERE NOT fanout_done)"
            f" + (SELECT count(*) FROM deliveries WHERE status = 'queued'){in_flight}"
        )
        return int(rows[0][0])

    def wait_finished(self, within: float) -> float:
        """Wait until nothing is left to do; the seconds it took."""
        started = time.monotonic()
        left = self.unfinished()
        while left:
            waited = time.monotonic() - started
            assert waited < within, f"{left} fan-outs and deliveries unfinished after {within}s"
            time.sleep(0.25)
            left = self.unfinished()
        return time.monotonic() - started


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The store of the node: the SQLite file of its data dir, or a fresh PostgreSQL
    database (skipped when the server is away, failed instead when CI is set)."""
    if request.param == "sqlite":
        yield {}
        return
    server = reach_server()
    name = run_sync(server.create)
    try:
        yield {"NOTEFLY_DATABASE_URL": server.url(name)}
    finally:
        run_sync(lambda: server.drop(name))


def view_of(data_dir: Path, env: dict[str, str]) -> StoreView:
    url = env.get("NOTEFLY_DATABASE_URL")
    return StoreView(postgres_url=url) if url else StoreView(sqlite_path=data_dir / "notefly.db")
