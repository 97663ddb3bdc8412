"""Circuit breakers behind the real broker (SQLite, actors, HTTP app): a provider that
fails opens its circuit, held deliveries keep their attempts, one probe goes out, and
after recovery every delivery is sent exactly once, with /readyz and /status following
along. Once with a scripted provider, once with the real webhook provider against a
loopback receiver that answers 503 for a while."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from broker.app import create_app
from notefly.breaker import Breakers
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.domain import Rendered, User
from notefly.errors import TransientChannelError
from notefly.ports import SendResult
from notefly.status import render
from tests.integration.conftest import RecordingChannel
from tests.integration.opsbroker import parse_metrics, sample
from tests.integration.running import broker_app
from tests.peers import HttpPeer, Reply, Request

BREAKER: dict[str, Any] = {
    "breaker_failures": 3,
    "breaker_cooldown_seconds": 0.5,
    "breaker_max_cooldown_seconds": 1.0,
    "retry_base_seconds": 0.01,
    # Held deliveries are tried again every cool-down: if that burned attempts, they
    # would run out of these long before the provider recovers.
    "max_attempts": 6,
    # One delivery a round, so that a probe held back by the test holds no other.
    "round_size": 1,
}


@dataclass(frozen=True)
class Call:
    delivery_id: str
    circuit: str  # the breaker's state when the provider was called
    ok: bool


class FlakyChannel:
    """Fails the first ``failures`` calls, then sends. The first probe (a call while the
    circuit is half-open) waits for ``release``, so the test looks at the held
    deliveries while it is out; later probes take ``probe_seconds``, so that others
    arrive while they are out."""

    provider = "flaky"

    def __init__(self, name: str, failures: int, probe_seconds: float = 0.2) -> None:
        self.name = name
        self.failures = failures
        self.probe_seconds = probe_seconds
        self.release = asyncio.Event()
        self.breakers: Breakers | None = None
        self.calls: list[Call] = []  # appended on the event loop only

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        assert self.breakers is not None
        circuit = self.breakers.state(self.name, self.provider)
        ok = self.failures <= 0
        self.failures -= 1
        self.calls.append(Call(delivery_id, circuit, ok))
        if circuit == "half_open":
            await self.release.wait()
            await asyncio.sleep(self.probe_seconds)
        if not ok:
            raise TransientChannelError("503 Service Unavailable")
        return SendResult(self.provider, f"fl-{delivery_id}")

    def probing(self) -> str | None:
        """The delivery of the probe being held back, if one is."""
        if not self.calls or self.release.is_set():
            return None
        last = self.calls[-1]
        return last.delivery_id if last.circuit == "half_open" else None


async def until(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """The first truthy result of ``check``, polled."""
    async with asyncio.timeout(within):
        while not (found := await check()):
            await asyncio.sleep(0.02)
    return found


async def get_json(client: Any, path: str) -> tuple[int, Any]:
    response = await client.get(path)
    return response.status_code, await response.get_json()


def circuit_of(body: dict[str, Any], channel: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in body["circuits"] if c["channel"] == channel]
    assert len(found) == 1
    return found[0]


async def deliveries(client: Any, message_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await get_json(client, f"/messages/{message_id}/deliveries"))[1][
        "deliveries"
    ]
    return rows


async def publish(client: Any, category: str, body: str) -> str:
    response = await client.post("/pub", json={"category": category, "body": body})
    assert response.status_code == 202, await response.get_data(as_text=True)
    message_id: str = (await response.get_json())["id"]
    return message_id


async def delivered(client: Any, message_id: str, within: float = 15.0) -> None:
    async def done() -> bool:
        return bool((await get_json(client, f"/messages/{message_id}"))[1]["status"] == "delivered")

    await until(done, within)


async def subscribers(
    container: Container, category: str, channel: str, names: list[str]
) -> list[str]:
    directory = await resolve(container.directory)
    ids = []
    for name in names:
        user = await directory.register(User(id="", name=name, phone="+14155550100"))
        await directory.subscribe(user.id, category, [channel])
        ids.append(user.id)
    return ids


async def test_an_outage_opens_the_circuit_holds_deliveries_and_one_probe_closes_it(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, **BREAKER)
    sms = FlakyChannel("sms", failures=4)  # three to open it, then the first probe
    others = {name: RecordingChannel(name) for name in ("email", "push")}
    channels: dict[str, Any] = {"sms": sms, **others}
    with capture_logs() as logs:
        async with broker_app(settings, channels) as (client, container):
            breakers = sms.breakers = await resolve(container.breakers)
            await subscribers(container, "movies", "sms", ["first"])
            await subscribers(container, "finance", "sms", [f"user{n}" for n in range(5)])

            first = await publish(client, "movies", "Premiere tonight")

            async def degraded() -> Any:
                code, body = await get_json(client, "/readyz")
                assert code == 200  # an outage of a provider keeps the node in rotation
                return body if body["status"] == "degraded" else None

            ready: dict[str, Any] = await until(degraded)
            sms_circuit = circuit_of(ready, "sms")
            assert ready["ready"] is True
            # Open, or half-open with its first probe held back by the provider.
            assert sms_circuit["provider"] == "flaky"
            assert sms_circuit["state"] in ("open", "half_open")
            assert sms_circuit["consecutive_failures"] == 3 and sms_circuit["opened"] == 1
            assert "503 Service Unavailable" in sms_circuit["last_failure"]
            assert circuit_of(ready, "email")["state"] == "closed"

            # Published while the circuit is not closed: held back, nothing burned.
            second = await publish(client, "finance", "Rates up")

            async def held() -> list[dict[str, Any]] | None:
                rows = await deliveries(client, second)
                waiting = [
                    r for r in rows if "circuit" in (r["error"] or "") or r["id"] == sms.probing()
                ]
                return rows if len(rows) == 5 and len(waiting) == 5 else None

            rows = await until(held)
            assert {(r["status"], r["attempts"]) for r in rows} == {("queued", 0)}
            (row,) = await deliveries(client, first)
            assert (row["status"], row["attempts"]) == ("queued", 3)
            # The first probe is out (or about to be): everyone else keeps waiting.

            async def probe_out() -> bool:
                return sms.probing() is not None

            await until(probe_out)
            assert breakers.state("sms", "flaky") == "half_open"

            code, status = await get_json(client, "/status")
            assert code == 200 and status["status"] == "degraded"
            by_channel = {p["channel"]: p for p in status["providers"]}
            assert by_channel["sms"]["circuit"] == "half_open"
            assert by_channel["email"]["circuit"] == "closed"
            text = render(status, "http://broker")
            assert "READY (degraded)" in text and "half_open" in text
            metrics = parse_metrics(await (await client.get("/metrics")).get_data(as_text=True))
            state = {
                s: sample(
                    metrics,
                    "notefly_circuit_breaker_state",
                    channel="sms",
                    provider="flaky",
                    state=s,
                )
                for s in ("closed", "open", "half_open")
            }
            assert state == {"closed": 0, "open": 0, "half_open": 1}
            sms.release.set()  # the first probe fails: open again, for twice as long

            async def reopened() -> Any:
                body = (await get_json(client, "/readyz"))[1]
                return circuit_of(body, "sms")["opened"] == 2

            await until(reopened)
            code, status = await get_json(client, "/status")
            assert {p["channel"]: p["circuit"] for p in status["providers"]}["sms"] in (
                "open",
                "half_open",
            )

            await delivered(client, first)
            await delivered(client, second)
            code, ready = await get_json(client, "/readyz")
            assert code == 200 and ready["status"] == "ok"
            assert circuit_of(ready, "sms")["state"] == "closed"
            assert circuit_of(ready, "sms")["opened"] == 2  # the failed probe re-opened it
            rows = await deliveries(client, first) + await deliveries(client, second)
            metrics = parse_metrics(await (await client.get("/metrics")).get_data(as_text=True))

    # Every delivery reached the provider once with success, and its attempts are
    # exactly the calls the provider got for it: waiting did not count.
    sent = Counter(c.delivery_id for c in sms.calls if c.ok)
    assert sorted(sent) == sorted(r["id"] for r in rows) and set(sent.values()) == {1}
    calls = Counter(c.delivery_id for c in sms.calls)
    assert {r["id"]: r["attempts"] for r in rows} == dict(calls)
    assert {r["status"] for r in rows} == {"sent"}
    # Three failures while closed, then one probe per half-open period, never a call
    # while open.
    assert [(c.circuit, c.ok) for c in sms.calls[:5]] == [
        ("closed", False),
        ("closed", False),
        ("closed", False),
        ("half_open", False),
        ("half_open", True),
    ]
    assert {c.circuit for c in sms.calls[5:]} == {"closed"}
    # Failed attempts are retries in the metrics; held deliveries are not.
    assert sample(metrics, "notefly_delivery_retries_total", channel="sms", provider="flaky") == 4
    assert sample(metrics, "notefly_dead_letters_total", channel="sms", provider="flaky") == 0
    closed = {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    assert {
        s: sample(
            metrics, "notefly_circuit_breaker_state", channel="sms", provider="flaky", state=s
        )
        for s in closed
    } == closed
    events = [e for e in logs if str(e["event"]).startswith("breaker.")]
    assert [e["event"] for e in events] == [
        "breaker.opened",
        "breaker.half_open",
        "breaker.opened",
        "breaker.half_open",
        "breaker.closed",
    ]
    assert [e["cooldown_seconds"] for e in events if e["event"] == "breaker.opened"] == [0.5, 1.0]
    assert all((e["channel"], e["provider"]) == ("sms", "flaky") for e in events)
    assert not [e for e in logs if e["event"] == "delivery.failed"]


@contextlib.asynccontextmanager
async def real_broker(settings: Settings) -> AsyncIterator[tuple[Any, Container]]:
    """A broker whose providers are built from settings, as in production."""
    container = Container(settings=settings)
    await start(container.store)
    try:
        await start(container.actors)
        app = create_app(container)
        async with app.test_app() as test_app:
            yield test_app.test_client(), container
    finally:
        await stop(container.actors)
        await stop(container.store)


async def test_the_real_webhook_provider_waits_out_a_receiver_answering_503(tmp_path: Path) -> None:
    outage = {"left": 3}  # the receiver answers 503 to the first three requests
    seen: list[tuple[str, str, int]] = []  # (webhook-id, circuit at arrival, status)
    breakers: list[Breakers] = []
    release = asyncio.Event()  # the receiver holds the first probe until the test looks
    probing: list[str] = []

    async def receiver(request: Request) -> Reply:
        status = 503 if outage["left"] > 0 else 204
        outage["left"] -= 1
        circuit = breakers[0].state("webhook", "http")
        seen.append((request.headers["webhook-id"], circuit, status))
        if circuit == "half_open" and not release.is_set():
            probing.append(request.headers["webhook-id"])
            await release.wait()
        return Reply(status)

    async with HttpPeer(receiver) as peer:
        settings = Settings(
            data_dir=tmp_path,
            channels=("webhook",),
            providers={"webhook": "http"},
            env={"NOTEFLY_WEBHOOK_ALLOW_HTTP": "1", "NOTEFLY_WEBHOOK_TIMEOUT": "20"},
            **BREAKER,
        )
        async with real_broker(settings) as (client, container):
            breakers.append(await resolve(container.breakers))
            directory = await resolve(container.directory)
            registrations = await resolve(container.registrations)
            users = []
            for n in range(4):
                user = await directory.register(User(id="", name=f"hook{n}"))
                await registrations.add_webhook(user.id, f"{peer.url}/hooks/{n}")
                await directory.subscribe(user.id, "sports" if n == 0 else "finance", ["webhook"])
                users.append(user.id)

            first = await publish(client, "sports", "Kick-off")

            async def opened() -> Any:
                code, body = await get_json(client, "/readyz")
                assert code == 200
                return body if circuit_of(body, "webhook")["state"] != "closed" else None

            body = await until(opened)
            assert body["status"] == "degraded"
            assert circuit_of(body, "webhook")["opened"] == 1
            assert "503" in circuit_of(body, "webhook")["last_failure"]
            second = await publish(client, "finance", "Final score")

            async def held() -> list[dict[str, Any]] | None:
                rows = await deliveries(client, second)
                waiting = [r for r in rows if "circuit" in (r["error"] or "") or r["id"] in probing]
                return rows if len(rows) == 3 and len(waiting) == 3 else None

            held_rows = await until(held)
            assert {(r["status"], r["attempts"]) for r in held_rows} == {("queued", 0)}

            async def probe_out() -> bool:
                return bool(probing)

            await until(probe_out)
            assert len(seen) == 4  # three refused, one probe: nobody else got through
            release.set()

            await delivered(client, first)
            await delivered(client, second)
            code, body = await get_json(client, "/readyz")
            assert code == 200 and body["status"] == "ok"
            assert circuit_of(body, "webhook")["state"] == "closed"
            (first_row,) = await deliveries(client, first)
            rows = [first_row, *await deliveries(client, second)]

    assert {r["status"] for r in rows} == {"sent"}
    accepted = Counter(hook_id for hook_id, _circuit, status in seen if status == 204)
    assert sorted(accepted) == sorted(r["id"] for r in rows) and set(accepted.values()) == {1}
    assert [(circuit, status) for _id, circuit, status in seen[:4]] == [
        ("closed", 503),
        ("closed", 503),
        ("closed", 503),
        ("half_open", 204),
    ]
    assert all(circuit == "closed" for _id, circuit, _status in seen[4:])
    assert len(seen) == 3 + len(rows)
    # Three refused attempts and one that went through; the others took one each.
    assert [r["attempts"] for r in rows] == [4, 1, 1, 1]
