"""`notefly status` against a running `notefly up`: the table, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e import seed
from tests.e2e.conftest import NoteflyProcess, free_port

pytestmark = pytest.mark.e2e


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notefly", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_prints_health_pending_work_and_failures(notefly_up: NoteflyProcess):
    seeded = seed.failed_delivery(notefly_up.data_dir)
    notefly_up.start()
    url = notefly_up.urls["broker"]

    table = status("--broker-url", url)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert f"broker {url}" in out and "READY" in out
    for check in ("store", "migrations", "actors"):
        assert any(line.split()[:2] == [check, "ok"] for line in out.splitlines()), out
    rows = {" ".join(line.split()[:-1]): line.split()[-1] for line in out.splitlines() if line}
    assert rows["queued in the store"] == "0"
    assert rows["failed (dead letters)"] == "1"
    assert "recent failures: 1" in out
    failure_line = next(line for line in out.splitlines() if seeded.delivery_id in line)
    assert "email" in failure_line and "421 relay unavailable" in failure_line

    as_json = status("--broker-url", url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    snapshot = json.loads(as_json.stdout)
    assert snapshot["ready"] is True
    assert snapshot["work"]["failed"] == 1
    assert [f["id"] for f in snapshot["failures"]] == [seeded.delivery_id]
    assert notefly_up.stop() == 0


def test_status_of_an_unreachable_broker_fails():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result = status("--broker-url", url, "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot reach the broker" in result.stderr


def test_status_with_keys_on_needs_the_admin_key(notefly_up: NoteflyProcess):
    admin_key = "status-admin-key-0123456789-abcdefghij"
    notefly_up.env["NOTEFLY_ADMIN_KEY"] = admin_key
    notefly_up.start()
    url = notefly_up.urls["broker"]

    refused = status("--broker-url", url, "--json")
    assert refused.returncode == 1
    assert "answered 401" in refused.stderr and "--api-key" in refused.stderr

    allowed = status("--broker-url", url, "--json", "--api-key", admin_key)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["ready"] is True
    assert admin_key not in notefly_up.log()
    assert notefly_up.stop() == 0
