"""Real `notefly` processes: open mode stays on loopback, keys made by the CLI work
against a running broker, and a revoked key stops working within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import NoteflyProcess, free_port

ADMIN_KEY = "e2e-admin-key-0123456789-abcdefghijklmn"


def notefly(
    *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    unset = ("NOTEFLY_ADMIN_KEY", "NOTEFLY_API_KEY")
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    storage = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "notefly", *args, *storage],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )


def test_open_mode_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    for args in (
        ["broker", "--host", "0.0.0.0", "--port", str(free_port())],
        ["client", "--host", "0.0.0.0", "--port", str(free_port())],
        ["up", "--host", "0.0.0.0", "--workers", "2"],
    ):
        done = notefly(*args, data_dir=tmp_path / "data")
        assert done.returncode == 2, (args, done.stderr)
        assert "refusing to listen on 0.0.0.0" in done.stderr
        assert "NOTEFLY_ADMIN_KEY" in done.stderr
        assert "notefly apikey create" in done.stderr


def test_with_an_admin_key_the_broker_starts_and_demands_keys(tmp_path: Path) -> None:
    port = free_port()
    broker = NoteflyProcess(
        args=["broker", "--port", str(port)],
        data_dir=tmp_path / "data",
        log_path=tmp_path / "broker.log",
        urls={"broker": f"http://127.0.0.1:{port}"},
        env={"NOTEFLY_ADMIN_KEY": ADMIN_KEY, "NOTEFLY_AUTH_CACHE_SECONDS": "1"},
    )
    broker.start()
    try:
        url = broker.urls["broker"]
        message = {"category": "finance", "body": "rates"}
        assert httpx.post(f"{url}/pub", json=message).status_code == 401
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert httpx.post(f"{url}/pub", json=message, headers=admin).status_code == 202

        created = notefly(
            "apikey", "create", "--name", "feed", "--category", "finance", data_dir=broker.data_dir
        )
        assert created.returncode == 0, created.stderr
        key_id = created.stdout.split()[2]
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("nfk_")
        listed = notefly("apikey", "list", data_dir=broker.data_dir)
        assert key_id in listed.stdout and key not in listed.stdout

        cli = ("--broker-url", url, "--api-key", key)
        published = notefly("publish", "finance", "via the CLI", *cli)
        assert published.returncode == 0, published.stderr
        refused = notefly("publish", "sports", "not mine", *cli)
        assert refused.returncode == 1 and "403" in refused.stderr

        assert notefly("apikey", "revoke", key_id, data_dir=broker.data_dir).returncode == 0
        deadline = time.monotonic() + 10
        status = 202
        while status != 401 and time.monotonic() < deadline:
            status = httpx.post(
                f"{url}/pub", json=message, headers={"Authorization": f"Bearer {key}"}
            ).status_code
            time.sleep(0.2)
        assert status == 401
        assert ADMIN_KEY not in broker.log() and key not in broker.log()
    finally:
        assert broker.stop() == 0
