"""The live stream when the broker and the client are separate processes sharing a
store: the client learns of new inbox rows by polling the store, not from the broker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import NoteflyProcess, free_port
from tests.e2e.helpers import publish, register, subscribe

pytestmark = pytest.mark.e2e


def test_a_client_process_streams_what_a_broker_process_delivers(tmp_path: Path) -> None:
    broker_port, client_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    broker = NoteflyProcess(
        ["broker", "--port", str(broker_port)],
        data_dir,
        tmp_path / "broker.log",
        {"broker": f"http://127.0.0.1:{broker_port}"},
    )
    client = NoteflyProcess(
        ["client", "--port", str(client_port)],
        data_dir,
        tmp_path / "client.log",
        {"client": f"http://127.0.0.1:{client_port}"},
    )
    broker.start()
    client.start()
    try:
        with (
            httpx.Client(base_url=client.urls["client"], timeout=10) as http,
            httpx.Client(base_url=broker.urls["broker"], timeout=10) as pub,
        ):
            ada = register(http, "ada", email="ada@example.org")
            subscribe(http, ada, "finance", ["email"])
            with http.stream("GET", f"/users/{ada}/stream") as response:
                lines = response.iter_lines()
                assert next(lines) == "retry: 2000"
                message_id = publish(pub, "finance", "Rates up across processes")
                event: dict[str, str] = {}
                for line in lines:  # bounded by the client's 10 s read timeout
                    if line.startswith("data: "):
                        event = json.loads(line.removeprefix("data: "))
                        break
        assert event["message_id"] == message_id
        assert event["body"] == "Rates up across processes"
    finally:
        assert client.stop() == 0
        assert broker.stop() == 0
