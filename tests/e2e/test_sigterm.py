"""SIGTERM under a publishing load: a clean exit, and nothing accepted is lost.

The node stops taking requests when the signal arrives, finishes what it has on the
wire, hands the rest back to the store and exits 0; what it accepted and had not
delivered goes out after the next start. With ``notefly up --workers 2`` the supervisor
passes the signal on, and no process of the group outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import NoteflyProcess, free_port
from tests.e2e.helpers import publish, register, subscribe
from tests.e2e.load import PublishLoad, StoreView, WebhookReceiver, store_env, view_of

pytestmark = pytest.mark.e2e
__all__ = ["store_env"]  # the fixture, imported for pytest

USERS = 50
CHANNELS = ["sms", "email"]
EXIT_WITHIN = 15.0  # seconds from SIGTERM to the exit of every process
DRAIN_SECONDS = 90.0
SHUTDOWN_MARGIN = 0.5  # seconds; see _none_accepted_after
SLOW_PROVIDER_SECONDS = 8.0  # longer than the shutdown's grace for work in flight


def _node(tmp_path: Path, *args: str) -> NoteflyProcess:
    broker, client = free_port(), free_port()
    return NoteflyProcess(
        ["up", *args, "--broker-port", str(broker), "--client-port", str(client)],
        tmp_path / "data",
        tmp_path / "node.log",
        {"broker": f"http://127.0.0.1:{broker}", "client": f"http://127.0.0.1:{client}"},
        # Small rounds on one shard per channel: delivery lags behind publishing, so
        # the signal lands with work in every stage.
        env={"NOTEFLY_ROUND_SIZE": "8", "NOTEFLY_SHARDS_PER_CHANNEL": "1"},
    )


def _subscribers(node: NoteflyProcess) -> None:
    with httpx.Client(base_url=node.urls["client"], timeout=30) as client:

        def make_user(i: int) -> None:
            user = register(
                client, f"user{i:03d}", email=f"u{i}@example.org", phone=f"+1415558{i:04d}"
            )
            subscribe(client, user, "finance", CHANNELS)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make_user, range(USERS)))


def _load(node: NoteflyProcess, messages: int) -> PublishLoad:
    """Publishers that keep trying, refused or not, until they are halted."""
    return PublishLoad(
        node.urls["broker"],
        keys=[f"term-{n}" for n in range(messages)],
        category_of=lambda _n: "finance",
        publishers=4,
    )


def _none_accepted_after(load: PublishLoad, began: float) -> None:
    """No publish that reached the node after shutdown began was accepted.

    ``began`` is when the signal handler ran; the server stops reading requests a few
    turns of its event loop later, so a request may still be read in between: those
    are committed and delivered like any other. A request started ``SHUTDOWN_MARGIN``
    later is past that, and must be refused, cut off or answered 503.
    """
    later = [a for a in load.attempts + load.refused if a.started > began + SHUTDOWN_MARGIN]
    assert later, "no publish was tried after shutdown began: nothing was checked"
    accepted = [a for a in later if a.status == 202]
    assert not accepted, f"{len(accepted)} publishes accepted after shutdown began"
    assert {a.status for a in later} <= {None, 503}, {a.status for a in later}


def _wait_for(condition: str, check: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{condition} not reached within {within}s"
        time.sleep(0.02)


def _terminate(node: NoteflyProcess) -> tuple[int, float]:
    """SIGTERM the node (its main process only); its exit code and how long it took."""
    assert node.proc is not None
    signalled = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    try:
        code = node.proc.wait(EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        node.kill()
        raise AssertionError(f"still running {EXIT_WITHIN}s after SIGTERM:\n{node.log()}") from None
    return code, time.monotonic() - signalled


def _shutdown_began(log: Path, *, last: bool = False) -> float:
    """When the node logged that shutdown began (Unix time); with ``last``, the latest
    such moment of all its processes."""
    moments = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"notefly.shutdown"' in line:
            stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
            moments.append(datetime.fromisoformat(stamp).timestamp())
    assert moments, "the node never logged notefly.shutdown"
    return max(moments) if last else moments[0]


def _incomplete(view: StoreView, message_ids: list[str]) -> list[str]:
    """The messages among ``message_ids`` that lack any of their deliveries."""
    sent = dict(
        view.query(
            "SELECT message_id, count(*) FROM deliveries WHERE status = 'sent' GROUP BY message_id"
        )
    )
    return [m for m in message_ids if sent.get(m, 0) != USERS * len(CHANNELS)]


def test_sigterm_under_load_exits_0_and_every_accepted_message_is_delivered(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    node = _node(tmp_path, "--workers", "1")
    node.env.update(store_env)
    node.start()
    view = view_of(node.data_dir, store_env)
    try:
        _subscribers(node)
        load = _load(node, 20_000)
        load.start()
        _wait_for("a publishing backlog", lambda: load.sent >= 150 and view.unfinished(), 60)
        code, took = _terminate(node)
        time.sleep(SHUTDOWN_MARGIN + 0.5)  # publishers keep knocking at a closed door
        load.halt()
        load.join(within=30)
        assert code == 0, node.log()
        _none_accepted_after(load, _shutdown_began(node.log_path))

        accepted = list(load.accepted.values())
        assert accepted, "nothing was accepted before the signal"
        stored = {key for (key,) in view.query("SELECT idempotency_key FROM messages")}
        assert set(load.accepted) <= stored, "a 202 was answered for an uncommitted message"
        left_over = _incomplete(view, accepted)
        assert not left_over or view.unfinished(), "undelivered messages with no work queued"

        node.start()  # what was left is delivered after the restart
        drained = view.wait_finished(DRAIN_SECONDS)
        lost = _incomplete(view, accepted)
        assert not lost, f"{len(lost)} accepted messages lack deliveries, e.g. {lost[:3]}"
        # A request cut off by the shutdown was committed completely or not at all.
        maybe = {key: mid for mid, key in view.query("SELECT id, idempotency_key FROM messages")}
        unknown = [maybe[k] for k in load.unknown if k in maybe]
        assert not _incomplete(view, unknown)
        assert set(maybe) <= set(load.accepted) | load.unknown
        code, _ = _terminate(node)
        assert code == 0, node.log()
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
    print(
        f"SIGTERM: exit 0 after {took:.1f}s; {len(accepted)} accepted"
        f" ({len(accepted) - len(left_over)} fully delivered before the exit),"
        f" {len(load.unknown)} cut off ({len(unknown)} committed), the rest"
        f" delivered {drained:.1f}s after the restart"
    )


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_stops_the_supervisor_and_all_its_workers(tmp_path: Path) -> None:
    node = _node(tmp_path, "--workers", "2")
    node.start()
    try:
        assert node.proc is not None
        pgid = node.proc.pid  # start_new_session: the supervisor leads the group
        _subscribers(node)
        load = _load(node, 5_000)
        load.start()
        _wait_for("a publishing backlog", lambda: load.sent >= 100, 60)
        code, took = _terminate(node)
        time.sleep(SHUTDOWN_MARGIN + 0.5)
        load.halt()
        load.join(within=30)
        assert code == 0, node.log()
        _wait_for("every worker gone", lambda: _group_gone(pgid), 5)
        log = node.log_path.read_text(errors="replace")
        assert log.count('"notefly.stopped"') == 2, "each worker stopped cleanly"
        # Each worker stops serving when its own signal arrives: the later of the two.
        _none_accepted_after(load, _shutdown_began(node.log_path, last=True))

        # The workers handed their work back when they stopped: a node of another
        # name (one worker) takes it over at once and delivers all that was accepted.
        accepted = list(load.accepted.values())
        node.args[node.args.index("--workers") + 1] = "1"
        node.start()
        view = view_of(node.data_dir, {})
        view.wait_finished(DRAIN_SECONDS)
        lost = _incomplete(view, accepted)
        assert not lost, f"{len(lost)} accepted messages lack deliveries, e.g. {lost[:3]}"
        code, _ = _terminate(node)
        assert code == 0, node.log()
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
    print(f"supervisor: exit 0 {took:.1f}s after SIGTERM, {len(accepted)} accepted, none lost")


def test_sigterm_while_a_slow_provider_holds_rounds_exits_0_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Sends still waiting on the provider when the grace period ends are abandoned:
    the process exits all the same, and they go out again after the restart."""
    users, messages, round_size = 20, 10, 8
    with WebhookReceiver(delay=SLOW_PROVIDER_SECONDS) as receiver:
        node = _node(tmp_path, "--workers", "1")
        node.env.update(
            {
                "NOTEFLY_CHANNELS": "webhook",
                "NOTEFLY_WEBHOOK_PROVIDER": "http",
                "NOTEFLY_WEBHOOK_ALLOW_HTTP": "1",
                "NOTEFLY_ROUND_SIZE": str(round_size),
            }
        )
        node.start()
        try:
            with (
                httpx.Client(base_url=node.urls["client"], timeout=30) as client,
                httpx.Client(base_url=node.urls["broker"], timeout=30) as broker,
            ):
                for i in range(users):
                    user = register(client, f"slow{i:02d}")
                    hook = receiver.url_for(user)
                    response = client.post(f"/users/{user}/webhooks", json={"url": hook})
                    assert response.status_code == 201, response.text
                    receiver.secrets[user] = response.json()["secret"]
                    subscribe(client, user, "finance", ["webhook"])
                accepted = [publish(broker, "finance", f"slow {n}") for n in range(messages)]
            _wait_for("sends waiting on the provider", lambda: receiver.counts(), 30)
            code, took = _terminate(node)
            assert code == 0, node.log()
            receiver.delay = 0.0
            node.start()
            view = view_of(node.data_dir, {})
            view.wait_finished(DRAIN_SECONDS)
            code, _ = _terminate(node)
            assert code == 0, node.log()
        finally:
            if node.proc is not None and node.proc.poll() is None:
                node.kill()
    assert not receiver.forged
    sent = view.query("SELECT id FROM deliveries WHERE status = 'sent'")
    assert len(sent) == users * messages, "every delivery sent after the restart"
    assert {m for (m,) in view.query("SELECT DISTINCT message_id FROM deliveries")} == set(accepted)
    seen = receiver.counts()
    assert set(seen) == {d for (d,) in sent}
    repeats = sum(count - 1 for count in seen.values())
    # One shard per channel with four rounds in flight: at most that many were cut off.
    assert repeats <= 4 * round_size, f"{repeats} deliveries went out twice"
    print(f"slow provider: exit 0 {took:.1f}s after SIGTERM, {repeats} sent again after restart")
