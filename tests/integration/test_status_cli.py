"""`notefly status` on a broker that is not ready, served from loopback."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from notefly.status import report

NOT_READY: dict[str, Any] = {
    "service": "broker",
    "version": "0.1.0",
    "node": "box:5000",
    "ready": False,
    "checks": [
        {"name": "store", "ok": True, "detail": "reachable"},
        {"name": "migrations", "ok": False, "detail": "pending: 3"},
        {"name": "actors", "ok": True, "detail": "12 shard actors"},
    ],
    "work": {"queued": 40, "failed": 0, "in_actors": 7},
    "actors": {"entities": 5},
    "counters": {"messages_accepted": 2, "sent": 0, "failed": 0, "retried": 0},
    "providers": [],
    "failures": [],
}


@pytest.fixture
def broker_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(NOT_READY).encode() if self.path == "/status" else b"{}"
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_broker_that_is_not_ready_exits_1_and_says_why(broker_url: str):
    out = io.StringIO()
    assert report(broker_url, as_json=False, out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("NOT READY")
    assert any(line.split()[:3] == ["migrations", "FAIL", "pending:"] for line in lines)
    assert any(line.split() == ["queued", "in", "the", "store", "40"] for line in lines)
    assert "recent failures: none" in lines


def test_json_output_is_the_snapshot(broker_url: str):
    out = io.StringIO()
    assert report(broker_url, as_json=True, out=out) == 1
    assert json.loads(out.getvalue()) == NOT_READY
