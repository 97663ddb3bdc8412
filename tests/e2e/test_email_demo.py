"""`notefly demo` with the SMTP provider, against a real SMTP server (aiosmtpd) on
loopback: the demo users get real emails a mail client renders (multipart text + HTML,
proper headers), and the one-click unsubscribe link in them works on a real client."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from email.utils import getaddresses
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import NoteflyProcess, free_port
from tests.peers import LoopbackController, MailHandler, smtp_peer

pytestmark = pytest.mark.e2e


@pytest.fixture
def smtp() -> Iterator[tuple[MailHandler, LoopbackController]]:
    handler = MailHandler()
    controller = smtp_peer(handler)
    yield handler, controller
    controller.stop()


def test_notefly_demo_sends_real_emails_with_a_working_unsubscribe_link(
    tmp_path: Path, smtp: tuple[MailHandler, LoopbackController]
) -> None:
    handler, controller = smtp
    data_dir, client_port = tmp_path / "data", free_port()
    env = {
        "NOTEFLY_LOG_FORMAT": "json",
        "NOTEFLY_EMAIL_PROVIDER": "smtp",
        "NOTEFLY_SMTP_HOST": "127.0.0.1",
        "NOTEFLY_SMTP_PORT": str(controller.port),
        "NOTEFLY_SMTP_TLS": "none",
        "NOTEFLY_SMTP_FROM": "Notefly Demo <demo@notefly.example.org>",
        "NOTEFLY_CLIENT_PUBLIC_URL": f"http://127.0.0.1:{client_port}",
    }
    demo = subprocess.run(
        [sys.executable, "-m", "notefly", "demo", "--data-dir", str(data_dir)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]

    mails = handler.wait_for(4)
    assert len(mails) == 4  # Alice: finance; Carol: finance, movies, sports
    by_rcpt = sorted((m.rcpt_tos[0], m.parsed()["Subject"]) for m in mails)
    assert by_rcpt == [
        ("alice@example.org", "Rates up"),
        ("carol@example.org", "Final score"),
        ("carol@example.org", "Premiere tonight"),
        ("carol@example.org", "Rates up"),
    ]
    for mail in mails:
        email = mail.parsed()
        assert getaddresses([email["From"]]) == [("Notefly Demo", "demo@notefly.example.org")]
        [(name, address)] = getaddresses([email["To"]])
        assert (name, address) in {("Alice", "alice@example.org"), ("Carol", "carol@example.org")}
        assert email["Message-ID"].startswith("<d_")
        assert email["Message-ID"].endswith("@notefly.example.org>")
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert email.get_content_type() == "multipart/alternative"
        plain, html = email.iter_parts()
        assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
        assert f"Hello {name}" in plain.get_content()
        assert "<html" in html.get_content() and "</html>" in html.get_content()
    assert "sent" in demo.stdout and "carol@example.org" in demo.stdout

    # Carol's "Premiere tonight" email unsubscribes her from movies, and only from movies.
    movies = next(m.parsed() for m in mails if m.parsed()["Subject"] == "Premiere tonight")
    link = movies["List-Unsubscribe"].strip("<>")
    assert link.startswith(f"http://127.0.0.1:{client_port}/unsubscribe/")
    client = NoteflyProcess(
        args=["client", "--port", str(client_port)],
        data_dir=data_dir,
        log_path=tmp_path / "client.log",
        urls={"client": f"http://127.0.0.1:{client_port}"},
        env=env,
    )
    client.start()
    try:
        response = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert response.status_code == 200, response.text
        subs = httpx.get(
            f"http://127.0.0.1:{client_port}/users/demo-carol/subscriptions", timeout=10
        ).json()["subscriptions"]
        assert sorted(s["category"] for s in subs) == ["finance", "sports"]
    finally:
        assert client.stop() == 0


def test_a_missing_smtp_setting_stops_the_demo_with_its_name(tmp_path: Path) -> None:
    env = {**os.environ, "NOTEFLY_EMAIL_PROVIDER": "smtp", "NOTEFLY_SMTP_FROM": "n@example.org"}
    env.pop("NOTEFLY_SMTP_HOST", None)
    demo = subprocess.run(
        [sys.executable, "-m", "notefly", "demo", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 2
    assert "configuration error: NOTEFLY_SMTP_HOST is not set" in demo.stderr
