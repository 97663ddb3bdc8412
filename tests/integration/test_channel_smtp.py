"""The SMTP provider against a real SMTP server (aiosmtpd) on loopback; what arrives is
read back with the standard library's email parser, as a mail client would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from channels.smtp import SmtpChannel
from notefly.config import Settings
from notefly.domain import Message, Recipient, Rendered
from notefly.errors import ConfigurationError, PermanentChannelError, TransientChannelError
from notefly.rendering import TemplateRenderer, build_environment
from notefly.unsubscribe import UnsubscribeLinks
from tests.peers import (
    Certificate,
    Credentials,
    LoopbackController,
    MailHandler,
    self_signed,
    smtp_peer,
)

PASSWORD = "s3cret-smtp-pa55word"  # a test credential


@pytest.fixture
def mailbox() -> MailHandler:
    return MailHandler()


@pytest.fixture
def server(mailbox: MailHandler) -> Iterator[LoopbackController]:
    controller = smtp_peer(mailbox)
    yield controller
    controller.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return self_signed(tmp_path)


def settings(tmp_path: Path, port: int, **env: str) -> Settings:
    base = {
        "NOTEFLY_SMTP_HOST": "127.0.0.1",
        "NOTEFLY_SMTP_PORT": str(port),
        "NOTEFLY_SMTP_TLS": "none",
        "NOTEFLY_SMTP_FROM": "Notefly News <news@notefly.example.org>",
        "NOTEFLY_SMTP_REPLY_TO": "help@notefly.example.org",
        "NOTEFLY_SMTP_LOCAL_HOSTNAME": "notefly.test",
    }
    return Settings(
        data_dir=tmp_path,
        client_public_url="https://notefly.example.org",
        env={**base, **{f"NOTEFLY_SMTP_{k.upper()}": v for k, v in env.items()}},
    )


def render(
    title: str = "Rates up", body: str = "The key rate rose 0.25 points.", **kw: str
) -> Rendered:
    renderer = TemplateRenderer(build_environment())
    message = Message(
        id="msg_1",
        category_id="finance",
        body=body,
        title=title,
        accepted_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
    )
    recipient = Recipient(
        kw.get("user", "usr_ada"), kw.get("name", "Ada Lovelace"), kw.get("to", "ada@example.org")
    )
    return renderer.render("email", message, recipient)


async def test_an_email_arrives_multipart_with_the_headers_a_mail_client_needs(
    tmp_path: Path, server: LoopbackController, mailbox: MailHandler
) -> None:
    provider = SmtpChannel(settings(tmp_path, server.port))
    rendered = render(body="Café & <b>bold</b> news")

    result = await provider.send(rendered, delivery_id="d_0123abcd")
    await provider.aclose()

    [mail] = mailbox.wait_for(1)
    assert mail.mail_from == "news@notefly.example.org"
    assert mail.rcpt_tos == ["ada@example.org"]
    email = mail.parsed()
    assert getaddresses([email["From"]]) == [("Notefly News", "news@notefly.example.org")]
    assert getaddresses([email["To"]]) == [("Ada Lovelace", "ada@example.org")]
    assert email["Reply-To"] == "help@notefly.example.org"
    assert email["Subject"] == rendered.subject == "Rates up"
    assert email["Message-ID"] == "<d_0123abcd@notefly.example.org>"
    assert result.provider == "smtp" and result.provider_message_id == email["Message-ID"]
    assert email["Auto-Submitted"] == "auto-generated"
    assert parsedate_to_datetime(email["Date"]).tzinfo is not None
    # RFC 8058 one-click unsubscribe, pointing at the client's signed link.
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = email["List-Unsubscribe"]
    assert link.startswith("<https://notefly.example.org/unsubscribe/") and link.endswith(">")
    links = UnsubscribeLinks.from_settings(settings(tmp_path, server.port))
    assert links.read(link[1:-1].rsplit("/", 1)[1]) == ("usr_ada", "finance")
    # multipart/alternative: the plain text first, then the HTML, both decoded intact.
    assert email.get_content_type() == "multipart/alternative"
    plain, html = list(email.iter_parts())
    assert plain.get_content_type() == "text/plain" and plain.get_content_charset() == "utf-8"
    assert html.get_content_type() == "text/html"
    text, markup = (part.get_content().replace("\r\n", "\n") for part in (plain, html))
    assert text.strip() == rendered.text.strip()
    assert markup.strip() == (rendered.html or "").strip()
    assert "Café & <b>bold</b> news" in text
    assert "Café &amp; &lt;b&gt;bold&lt;/b&gt; news" in markup


async def test_user_data_cannot_inject_headers(
    tmp_path: Path, server: LoopbackController, mailbox: MailHandler
) -> None:
    provider = SmtpChannel(settings(tmp_path, server.port))
    title = "Rates\r\nBcc: victim@example.org\r\nX-Injected: yes"
    rendered = render(title=title, name="Ada\r\nBcc: other@example.org")

    await provider.send(rendered, delivery_id="d_inject")
    await provider.aclose()

    [mail] = mailbox.wait_for(1)
    email = mail.parsed()
    assert mail.rcpt_tos == ["ada@example.org"]
    assert email["Bcc"] is None and email["X-Injected"] is None
    assert email["Subject"] == "Rates Bcc: victim@example.org X-Injected: yes"
    assert getaddresses([email["To"]]) == [("Ada Bcc: other@example.org", "ada@example.org")]


async def test_an_address_with_a_line_break_is_refused_for_good(
    tmp_path: Path, server: LoopbackController, mailbox: MailHandler
) -> None:
    provider = SmtpChannel(settings(tmp_path, server.port))
    with pytest.raises(PermanentChannelError):
        await provider.send(render(to="ada@example.org\r\nRCPT TO:<x@y.org>"), delivery_id="d_1")
    await provider.aclose()
    assert mailbox.mails == []


async def test_one_connection_carries_many_messages(
    tmp_path: Path, server: LoopbackController, mailbox: MailHandler
) -> None:
    provider = SmtpChannel(settings(tmp_path, server.port))

    results = await asyncio.gather(
        *(provider.send(render(to=f"u{i}@example.org"), delivery_id=f"d_{i}") for i in range(25))
    )
    await provider.aclose()

    mails = mailbox.wait_for(25)
    assert len({m.peer for m in mails}) == 1  # every message came over one connection
    assert provider.connects == 1
    assert sorted(r.provider_message_id or "" for r in results) == sorted(
        f"<d_{i}@notefly.example.org>" for i in range(25)
    )


async def test_a_connection_the_server_dropped_is_reopened(
    tmp_path: Path, mailbox: MailHandler
) -> None:
    first = smtp_peer(mailbox)
    port = first.port
    provider = SmtpChannel(settings(tmp_path, port))
    await provider.send(render(), delivery_id="d_before")
    first.stop()  # the server goes away, dropping the idle connection
    second = smtp_peer(mailbox, port=port)
    try:
        await provider.send(render(), delivery_id="d_after")
    finally:
        await provider.aclose()
        second.stop()
    mails = mailbox.wait_for(2)
    assert [m.parsed()["Message-ID"] for m in mails] == [
        "<d_before@notefly.example.org>",
        "<d_after@notefly.example.org>",
    ]
    assert provider.connects == 2


async def test_4xx_replies_are_transient_and_5xx_permanent(
    tmp_path: Path, server: LoopbackController, mailbox: MailHandler
) -> None:
    mailbox.refuse["busy@example.org"] = "450 4.2.1 Mailbox busy, try later"
    mailbox.refuse["gone@example.org"] = "550 5.1.1 No such user"
    provider = SmtpChannel(settings(tmp_path, server.port))

    with pytest.raises(TransientChannelError, match="450"):
        await provider.send(render(to="busy@example.org"), delivery_id="d_busy")
    with pytest.raises(PermanentChannelError, match=r"550 recipient refused: 5\.1\.1 No such user"):
        await provider.send(render(to="gone@example.org"), delivery_id="d_gone")
    # The refusals left the connection usable for the next message.
    await provider.send(render(), delivery_id="d_ok")
    await provider.aclose()
    assert [m.rcpt_tos for m in mailbox.wait_for(1)] == [["ada@example.org"]]
    assert provider.connects == 1


async def test_an_unreachable_server_is_transient(tmp_path: Path) -> None:
    controller = smtp_peer(MailHandler())
    port = controller.port
    controller.stop()
    provider = SmtpChannel(settings(tmp_path, port))
    with pytest.raises(TransientChannelError):
        await provider.send(render(), delivery_id="d_1")
    await provider.aclose()


async def test_starttls_and_login_with_a_password_from_the_secrets_file(
    tmp_path: Path, mailbox: MailHandler, certificate: Certificate
) -> None:
    credentials = Credentials("notefly", PASSWORD)
    controller = smtp_peer(mailbox, starttls=certificate, credentials=credentials)
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"# smtp\nNOTEFLY_SMTP_PASSWORD='{PASSWORD}'\n")
    config = settings(
        tmp_path,
        controller.port,
        tls="starttls",
        username="notefly",
        ca_file=str(certificate.cert_file),
    )
    config = Settings(
        data_dir=tmp_path,
        env={**config.env, "NOTEFLY_SECRETS_FILE": str(secrets_file)},
    )
    try:
        with capture_logs() as logs:
            provider = SmtpChannel(config)
            await provider.send(render(), delivery_id="d_tls")
            await provider.aclose()
    finally:
        controller.stop()
    assert [m.rcpt_tos for m in mailbox.wait_for(1)] == [["ada@example.org"]]
    assert credentials.failures == 0
    assert PASSWORD not in repr(logs) and PASSWORD not in repr(config)


async def test_a_wrong_password_fails_without_the_password_showing_anywhere(
    tmp_path: Path, mailbox: MailHandler, certificate: Certificate
) -> None:
    controller = smtp_peer(mailbox, starttls=certificate, credentials=Credentials("n", "right"))
    config = settings(
        tmp_path,
        controller.port,
        tls="starttls",
        username="n",
        password=PASSWORD,
        ca_file=str(certificate.cert_file),
    )
    try:
        with capture_logs() as logs:
            provider = SmtpChannel(config)
            with pytest.raises(PermanentChannelError, match="535") as caught:
                await provider.send(render(), delivery_id="d_1")
            await provider.aclose()
    finally:
        controller.stop()
    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(logs)
    assert mailbox.mails == []


async def test_implicit_tls(tmp_path: Path, mailbox: MailHandler, certificate: Certificate) -> None:
    controller = smtp_peer(mailbox, implicit_tls=certificate)
    provider = SmtpChannel(
        settings(tmp_path, controller.port, tls="ssl", ca_file=str(certificate.cert_file))
    )
    try:
        await provider.send(render(), delivery_id="d_ssl")
        await provider.aclose()
    finally:
        controller.stop()
    assert len(mailbox.wait_for(1)) == 1


async def test_an_untrusted_certificate_is_refused(
    tmp_path: Path, mailbox: MailHandler, certificate: Certificate
) -> None:
    controller = smtp_peer(mailbox, starttls=certificate)
    provider = SmtpChannel(settings(tmp_path, controller.port, tls="starttls"))
    try:
        with pytest.raises(TransientChannelError, match="CERTIFICATE_VERIFY_FAILED"):
            await provider.send(render(), delivery_id="d_1")
        await provider.aclose()
    finally:
        controller.stop()
    assert mailbox.mails == []


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NOTEFLY_SMTP_HOST": ""}, "NOTEFLY_SMTP_HOST"),
        ({"NOTEFLY_SMTP_FROM": "not an address"}, "NOTEFLY_SMTP_FROM"),
        ({"NOTEFLY_SMTP_TLS": "maybe"}, "NOTEFLY_SMTP_TLS"),
        ({"NOTEFLY_SMTP_PORT": "twenty-five"}, "NOTEFLY_SMTP_PORT"),
        ({"NOTEFLY_SMTP_USERNAME": "n", "NOTEFLY_SMTP_TLS": "starttls"}, "NOTEFLY_SMTP_PASSWORD"),
        (
            {"NOTEFLY_SMTP_USERNAME": "n", "NOTEFLY_SMTP_PASSWORD": PASSWORD},
            "NOTEFLY_SMTP_TLS=none",
        ),
        ({"NOTEFLY_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "NOTEFLY_SMTP_CA_FILE"),
        ({"NOTEFLY_SMTP_MESSAGE_ID_DOMAIN": "a b\r\nX: y"}, "NOTEFLY_SMTP_MESSAGE_ID_DOMAIN"),
    ],
)
def test_bad_settings_fail_at_start_up_naming_the_setting(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    config = settings(tmp_path, 25)
    with pytest.raises(ConfigurationError, match=named) as caught:
        SmtpChannel(Settings(data_dir=tmp_path, env={**config.env, **env}))
    assert PASSWORD not in caught.value.message
