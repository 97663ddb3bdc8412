"""Hostile input: oversized and malformed bodies, over-long and control-laden fields,
header injection into email, HTML in a message, and template syntax from publishers.

The services run for real (hypercorn on loopback) where the transport matters (body
limits); email goes through the real SMTP provider to a real SMTP server on loopback and
is read back with the standard library's parser, as a mail client would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import httpx
import jinja2
import pytest

from broker.app import create_app as create_broker
from channels.smtp import SmtpChannel
from client.app import create_app as create_client
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.domain import DeliveryStatus, Message, Recipient, Rendered, User
from notefly.errors import ConfigurationError, PermanentChannelError
from notefly.rendering import TemplateRenderer, build_environment
from tests.integration.running import broker_app
from tests.integration.serving import serving
from tests.peers import LoopbackController, MailHandler, smtp_peer

LIMIT = 16 * 1024  # bytes of a request body
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


def field_of(error: dict[str, Any]) -> str:
    [detail] = error["details"]
    field: str = detail["field"]
    return field


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The broker and the client on loopback ports, sharing one store."""
    container = Container(settings=Settings(data_dir=tmp_path, max_body_bytes=LIMIT))
    await start(container.store)
    await start(container.actors)
    try:
        async with (
            serving(create_broker(container)) as broker_url,
            serving(create_client(container)) as client_url,
            httpx.AsyncClient(base_url=broker_url, timeout=10) as broker,
            httpx.AsyncClient(base_url=client_url, timeout=10) as client,
        ):
            yield broker, client
    finally:
        await stop(container.actors)
        await stop(container.store)


# -- sizes ---------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_with_413(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    broker, client = services
    body = json.dumps({"category": "finance", "body": "x" * LIMIT}).encode()
    headers = {"Content-Type": "application/json"}
    error = error_of(await broker.post("/pub", content=body, headers=headers), 413)
    assert error["code"] == "request_entity_too_large"
    user = json.dumps({"name": "Ada", "email": "a" * LIMIT + "@example.org"}).encode()
    error_of(await client.post("/users", content=user, headers=headers), 413)


async def chunked_post(base_url: str, path: str, chunks: int, size: int) -> tuple[int, Any]:
    """POST a chunked body (no Content-Length: the server learns the size by reading)."""
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())
        try:
            for _ in range(chunks):
                writer.write(f"{size:x}\r\n".encode() + b"x" * size + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed before the body ended: read the answer
        async with asyncio.timeout(10):  # an answer, not a hang
            raw = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _headers, _, content = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(content)


async def test_a_chunked_body_over_the_limit_is_refused_with_413_not_a_hang(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    broker, _client = services
    status, body = await chunked_post(str(broker.base_url), "/pub", chunks=16, size=4096)
    assert status == 413
    assert body["error"]["code"] == "request_entity_too_large"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"category": "finance", "body": "b" * 10_001}, "body"),
        ({"category": "finance", "body": "b", "title": "t" * 201}, "title"),
        ({"category": "c" * 65, "body": "b"}, "category"),
        ({"category": "finance", "body": "b", "idempotency_key": "k" * 201}, "idempotency_key"),
        ({"category": "finance", "body": "b", "data": {"k": "v" * 9000}}, "data"),
    ],
)
async def test_over_long_publish_fields_are_named_in_a_422(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], payload: dict[str, Any], field: str
) -> None:
    broker, _client = services
    error = error_of(await broker.post("/pub", json=payload), 422, "validation_failed")
    assert field_of(error) == field


@pytest.mark.parametrize(
    ("service", "path", "payload", "field"),
    [
        ("broker", "/categories", {"name": "n" * 81}, "name"),
        ("broker", "/categories", {"name": "Storms", "description": "d" * 501}, "description"),
        ("client", "/users", {"name": "n" * 101}, "name"),
        ("client", "/users", {"name": "Ada", "email": "a" * 250 + "@example.org"}, "email"),
        ("client", "/users", {"name": "Ada", "phone": "+1" + "5" * 20}, "phone"),
    ],
)
async def test_over_long_names_and_addresses_are_named_in_a_422(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
    service: str,
    path: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    http = services[0] if service == "broker" else services[1]
    error = error_of(await http.post(path, json=payload), 422, "validation_failed")
    assert field_of(error) == field


async def test_an_over_long_webhook_url_is_named_in_a_422(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _broker, client = services
    user = (await client.post("/users", json={"name": "Ada"})).json()["id"]
    url = "https://hooks.example.org/" + "a" * 2100
    response = await client.post(f"/users/{user}/webhooks", json={"url": url})
    assert field_of(error_of(response, 422)) == "url"


# -- malformed bytes and control characters -----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"category": "finance", "body": "\xff\xfe"}',  # not UTF-8
        b'{"category": "finance", "body": "\xc3\x28"}',  # a broken UTF-8 sequence
        b'{"category": "finance", "body": "a\x00b"}',  # a raw NUL byte inside a string
        b'{"category": "finance", "body": "b"',  # cut short
    ],
)
async def test_bytes_that_are_not_json_get_a_400(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], raw: bytes
) -> None:
    broker, _client = services
    response = await broker.post("/pub", content=raw, headers={"Content-Type": "application/json"})
    error_of(response, 400, "malformed_json")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"category": "finance", "body": "a\u0000b"}, "body"),  # PostgreSQL cannot store it
        ({"category": "finance", "body": "a\u001b[31mb"}, "body"),  # a terminal escape
        ({"category": "finance", "body": "b", "title": "Rates\r\nBcc: x@example.org"}, "title"),
        ({"category": "finance", "body": "b", "title": "a\u0000b"}, "title"),
        ({"category": "finance", "body": "b", "data": {"k": ["a\u0000"]}}, "data"),
        ({"category": "finance", "body": "b", "data": {"k\u0000": 1}}, "data"),
        ({"category": "finance", "body": "b", "idempotency_key": "k\n1"}, "idempotency_key"),
    ],
)
async def test_control_characters_are_refused_where_they_do_not_belong(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], payload: dict[str, Any], field: str
) -> None:
    broker, _client = services
    error = error_of(await broker.post("/pub", json=payload), 422, "validation_failed")
    assert field_of(error) == field


async def test_a_body_keeps_its_line_breaks_and_tabs(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    broker, _client = services
    response = await broker.post("/pub", json={"category": "finance", "body": "a\r\n\tb"})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("service", "path", "payload", "field"),
    [
        ("broker", "/categories", {"name": "Storms\r\nX: y"}, "name"),
        ("broker", "/categories", {"name": "Storms", "description": "a\u0000"}, "description"),
        ("client", "/users", {"name": "Ada\r\nBcc: x@example.org"}, "name"),
        ("client", "/users", {"name": "Ada", "email": "ada@example.org\r\nBcc: x@y.org"}, "email"),
    ],
)
async def test_line_breaks_in_names_and_addresses_are_refused(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
    service: str,
    path: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    http = services[0] if service == "broker" else services[1]
    error = error_of(await http.post(path, json=payload), 422, "validation_failed")
    assert field_of(error) == field


@pytest.mark.parametrize(
    "url", ["https://hooks.example.org/a\u0000b", "https://hooks.example.org/a\r\nb"]
)
async def test_a_webhook_url_with_control_characters_is_refused(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], url: str
) -> None:
    _broker, client = services
    user = (await client.post("/users", json={"name": "Ada"})).json()["id"]
    response = await client.post(f"/users/{user}/webhooks", json={"url": url})
    assert field_of(error_of(response, 422)) == "url"


async def test_the_openapi_description_names_the_errors_of_a_body(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    broker, client = services
    for http, path in ((broker, "/pub"), (client, "/users")):
        responses = (await http.get("/openapi.json")).json()["paths"][path]["post"]["responses"]
        assert {"400", "413", "415", "422", "503"} <= set(responses)
    deleted = (await client.get("/openapi.json")).json()["paths"]["/users/{user_id}"]["delete"]
    assert {"204", "404", "503"} <= set(deleted["responses"])


# -- email: header injection, HTML, templates ---------------------------------------


@pytest.fixture
def mailbox() -> Iterator[tuple[MailHandler, LoopbackController]]:
    handler = MailHandler()
    controller = smtp_peer(handler)
    yield handler, controller
    controller.stop()


def smtp_settings(tmp_path: Path, port: int, **extra: Any) -> Settings:
    env = {
        "NOTEFLY_SMTP_HOST": "127.0.0.1",
        "NOTEFLY_SMTP_PORT": str(port),
        "NOTEFLY_SMTP_TLS": "none",
        "NOTEFLY_SMTP_FROM": "Notefly News <news@notefly.example.org>",
    }
    return Settings(data_dir=tmp_path, max_body_bytes=LIMIT, env=env, **extra)


def rendered_email(renderer: TemplateRenderer, title: str, body: str, **data: Any) -> Rendered:
    message = Message(
        id="msg_1", category_id="finance", body=body, title=title, data=data, accepted_at=NOW
    )
    return renderer.render("email", message, Recipient("usr_ada", "Ada", "ada@example.org"))


async def test_line_breaks_in_anything_that_reaches_a_header_add_no_header(
    tmp_path: Path, mailbox: tuple[MailHandler, LoopbackController]
) -> None:
    """Title, recipient name, and template data that an operator's subject template
    uses: each is flattened onto its one line."""
    handler, server = mailbox
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "default.subject.txt").write_text("{{ title }} {{ data.tag }}")
    renderer = TemplateRenderer(build_environment([templates]))
    provider = SmtpChannel(smtp_settings(tmp_path, server.port))
    rendered = rendered_email(
        renderer, "Rates\r\nBcc: victim@example.org", "b", tag="x\nX-Injected: yes\r\n\r\nbody"
    )
    rendered = replace(rendered, meta={**rendered.meta, "name": "A\r\nB: c"})
    await provider.send(rendered, delivery_id="d_inject")
    await provider.aclose()

    [mail] = handler.wait_for(1)
    email = mail.parsed()
    assert mail.rcpt_tos == ["ada@example.org"]
    assert email["Bcc"] is None and email["X-Injected"] is None and email["B"] is None
    assert "\n" not in email["Subject"] and "Bcc: victim@example.org" in email["Subject"]
    assert getaddresses([email["To"]]) == [("A B: c", "ada@example.org")]
    names = [name.lower() for name in email]
    assert len(names) == len(set(names))  # every header once: none was smuggled in


async def test_a_recipient_address_with_a_line_break_is_never_sent(
    tmp_path: Path, mailbox: tuple[MailHandler, LoopbackController]
) -> None:
    handler, server = mailbox
    renderer = TemplateRenderer(build_environment())
    provider = SmtpChannel(smtp_settings(tmp_path, server.port))
    rendered = rendered_email(renderer, "t", "b")
    rendered = replace(rendered, to="ada@example.org\r\nBcc: x@y.org")
    with pytest.raises(PermanentChannelError, match="not an email address"):
        await provider.send(rendered, delivery_id="d_bad_to")
    await provider.aclose()
    assert handler.mails == []


def test_a_sender_name_with_a_line_break_stops_start_up(tmp_path: Path) -> None:
    settings = smtp_settings(tmp_path, 2525)
    env = {**settings.env, "NOTEFLY_SMTP_FROM": "News\r\nBcc: x@y.org <news@example.org>"}
    with pytest.raises(ConfigurationError, match="NOTEFLY_SMTP_FROM"):
        SmtpChannel(Settings(data_dir=tmp_path, env=env))


async def published_email(
    tmp_path: Path,
    mailbox: tuple[MailHandler, LoopbackController],
    payload: dict[str, Any],
    **settings: Any,
) -> tuple[dict[str, Any], list[Any]]:
    """Publish through the broker's API to one email subscriber; the delivery row and
    the mails that arrived."""
    handler, server = mailbox
    config = smtp_settings(tmp_path, server.port, channels=("email",), **settings)
    async with broker_app(config, {"email": SmtpChannel(config)}) as (http, container):
        directory = await resolve(container.directory)
        user = await directory.register(User(id="", name="Ada", email="ada@example.org"))
        await directory.subscribe(user.id, "finance", ["email"])
        response = await http.post("/pub", json=payload)
        assert response.status_code == 202, await response.get_data(as_text=True)
        message_id = (await response.get_json())["id"]
        async with asyncio.timeout(30):
            while (await (await http.get(f"/messages/{message_id}")).get_json())[
                "status"
            ] != "delivered":
                await asyncio.sleep(0.05)
        rows = (await (await http.get(f"/messages/{message_id}/deliveries")).get_json())[
            "deliveries"
        ]
    return rows[0], list(handler.mails)


async def test_html_in_a_message_is_escaped_in_the_email_html_part(
    tmp_path: Path, mailbox: tuple[MailHandler, LoopbackController]
) -> None:
    payload = {
        "category": "finance",
        "title": "<img src=x onerror=alert(1)>",
        "body": '<script>alert("x")</script> & <a href="javascript:evil()">click</a>',
    }
    delivery, [mail] = await published_email(tmp_path, mailbox, payload)
    assert delivery["status"] == "sent"
    plain, html = list(mail.parsed().iter_parts())
    markup = html.get_content()
    assert "<script>" not in markup and "<img src=x" not in markup and "<a href=" not in markup
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp;" in markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in markup
    assert '<script>alert("x")</script>' in plain.get_content()  # plain text is text


async def test_template_syntax_from_a_publisher_is_text_not_a_template(
    tmp_path: Path, mailbox: tuple[MailHandler, LoopbackController]
) -> None:
    body = "{{ 7 * 7 }} {{ ''.__class__.__mro__[1].__subclasses__() }} {% for x in y %}"
    delivery, [mail] = await published_email(
        tmp_path, mailbox, {"category": "finance", "body": body, "title": "{{ config }}"}
    )
    assert delivery["status"] == "sent"
    plain, _html = list(mail.parsed().iter_parts())
    assert body in plain.get_content()
    assert "49" not in plain.get_content() and "subclasses" in plain.get_content()
    assert mail.parsed()["Subject"] == "{{ config }}"


async def test_a_template_reaching_for_python_internals_fails_its_delivery(
    tmp_path: Path, mailbox: tuple[MailHandler, LoopbackController]
) -> None:
    """Templates are the operator's, but they render publisher data: they run sandboxed,
    and a template that reaches for ``__class__`` fails its delivery, sending nothing."""
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "default.txt").write_text(
        "{{ body.__class__.__mro__[1].__subclasses__() }}"
    )
    delivery, mails = await published_email(
        tmp_path,
        mailbox,
        {"category": "finance", "body": "b"},
        template_dir=templates,
        max_attempts=1,
    )
    assert delivery["status"] == DeliveryStatus.FAILED.value
    assert "unsafe" in (delivery["error"] or "")
    assert mails == []


def test_the_sandbox_never_hands_out_python_internals() -> None:
    """An unsafe attribute is an undefined value (empty, as any missing field is, so that
    templates may test optional data); calling anything reached through it is a
    ``SecurityError``. Either way nothing of Python's internals comes out."""
    env = build_environment()
    for source in (
        "{{ ''.__class__.__mro__ }}",
        "{{ body.__init__.__globals__ }}",
        "{{ data.items.__self__.__class__ }}",
        "{{ data.__class__.__base__ }}",
    ):
        assert env.from_string(source).render(body="b", data={}) == ""
    for source in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
        "{{ body.__init__.__globals__['os'].system('id') }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ):
        with pytest.raises(jinja2.exceptions.SecurityError):
            env.from_string(source).render(body="b", data={})
