"""Fuzzing both services from their own OpenAPI descriptions (schemathesis).

One real ``notefly up`` process serves the broker and the client on loopback ports, with
every channel enabled (log providers) and a little data (a user subscribed to a category,
a message delivered to them). Every operation each service describes gets a bounded,
derandomized number of generated requests (valid ones, invalid ones, and valid ones aimed
at the real ids); every
answer must be no 5xx, a status the operation declares, and a body and content type that
match what it declares (the HTML pages declare no response: for them, no 5xx). Failures
are gathered over all operations and reported at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e  # a real `notefly up` process

EXAMPLES = int(os.environ.get("NOTEFLY_FUZZ_EXAMPLES", "25"))  # per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A Server-Sent Events stream never ends: no request/response check applies (its own
# tests cover it).
SKIPPED = {"GET /users/{user_id}/stream"}
CHANNELS = "sms,email,push,webhook,apprise"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Services:
    broker: str
    client: str
    ids: dict[str, str]  # path parameter name -> a real id


def start(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    broker_port, client_port = free_port(), free_port()
    env = {
        **os.environ,
        "NOTEFLY_CHANNELS": CHANNELS,
        "NOTEFLY_LOG_LEVEL": "warning",
        "NOTEFLY_LOG_FORMAT": "json",
    }
    args = ["up", "--workers", "1", "--broker-port", str(broker_port)]
    args += ["--client-port", str(client_port), "--data-dir", str(data_dir)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "notefly", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    urls = (f"http://127.0.0.1:{broker_port}", f"http://127.0.0.1:{client_port}")
    deadline = time.monotonic() + 60
    for url in urls:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"notefly exited early:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.1)
    return process, *urls


def seed(broker: str, client: str) -> dict[str, str]:
    """A user subscribed to finance, a message they received: real ids to aim at."""
    with httpx.Client(base_url=client, timeout=10) as http:
        user = http.post("/users", json={"name": "Fuzz", "email": "fuzz@example.org"})
        assert user.status_code == 201, user.text
        user_id = user.json()["id"]
        sub = {"user": user_id, "category": "finance", "channels": ["email"]}
        assert http.post("/sub", json=sub).status_code == 200
    with httpx.Client(base_url=broker, timeout=10) as http:
        sent = http.post("/pub", json={"category": "finance", "body": "Rates up"})
        assert sent.status_code == 202, sent.text
        message_id = sent.json()["id"]
        deadline = time.monotonic() + 30
        while http.get(f"/messages/{message_id}").json()["status"] != "delivered":
            assert time.monotonic() < deadline, "the seed message was not delivered"
            time.sleep(0.1)
        [delivery] = http.get(f"/messages/{message_id}/deliveries").json()["deliveries"]
    return {
        "user_id": user_id,
        "message_id": message_id,
        "delivery_id": delivery["id"],
        "category_id": "finance",
    }


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    where = tmp_path_factory.mktemp("fuzz")
    process, broker, client = start(where / "data", where / "notefly.log")
    try:
        yield Services(broker, client, seed(broker, client))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def brief(error: BaseException, lines: int = 14) -> str:
    """The head of a failure: what failed, what came back, and the curl to reproduce it."""
    text = str(error).splitlines()
    curl = [line for line in text if line.strip().startswith("curl ")]
    return "\n".join([*text[:lines], "    ...", *curl[:1]])


def fuzz_operation(operation: Any, base_url: str, ids: dict[str, str]) -> str | None:
    """What failed for one operation (each distinct failure once), or ``None``."""
    # Valid requests, invalid ones, and valid ones aimed at the real ids.
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    real = {p.name: ids[p.name] for p in operation.path_parameters if p.name in ids}
    if real:
        strategies.append(operation.as_strategy(path_parameters=real))
    # The HTML pages document no response: nothing to conform to, but no 5xx either.
    checks = CHECKS if operation.definition.raw.get("responses") else [not_a_server_error]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(*strategies))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, checks=checks, timeout=15)

    try:
        run()
    except (Exception, FailureGroup) as exc:  # a group holds every distinct failure
        return f"{operation.label}: {brief(exc)}"
    return None


def fuzz(base_url: str, ids: dict[str, str]) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    fuzzed = [op for op in operations if op.label not in SKIPPED]
    assert len(fuzzed) > 5, f"only {len(fuzzed)} operations found at {base_url}/openapi.json"
    return [f for f in (fuzz_operation(op, base_url, ids) for op in fuzzed) if f is not None]


def test_the_broker_api_holds_to_its_description(services: Services) -> None:
    failures = fuzz(services.broker, services.ids)
    assert not failures, "\n\n".join(failures)


def test_the_client_api_holds_to_its_description(services: Services) -> None:
    failures = fuzz(services.client, services.ids)
    assert not failures, "\n\n".join(failures)
