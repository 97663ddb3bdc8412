"""Real peers on loopback for the provider tests: an HTTP server, an SMTP server, and a
self-signed certificate for the TLS ones. Nothing is patched: providers talk to these
over sockets exactly as they talk to the real services.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# -- HTTP ----------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = self.body
        headers = dict(self.headers)
        if isinstance(body, dict):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        raw = body.encode() if isinstance(body, str) else body
        reason = HTTPStatus(self.status).phrase
        head = [f"HTTP/1.1 {self.status} {reason}", f"Content-Length: {len(raw)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


Handler = Callable[[Request], Reply | Awaitable[Reply]]


class HttpPeer:
    """An HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length bodies) that records
    every request and answers with the scripted replies, then with ``default``."""

    def __init__(self, handler: Handler | None = None, default: Reply | None = None) -> None:
        self.requests: list[Request] = []
        self.connections = 0
        self._script: deque[Reply] = deque()
        self._handler = handler
        self._default = default or Reply(200)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._arrived = asyncio.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, *replies: Reply) -> HttpPeer:
        self._script.extend(replies)
        return self

    async def __aenter__(self) -> HttpPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Let each connection's handler see its end, so none is left for the loop to kill.
        async with asyncio.timeout(5):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Request]:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                parts = urlsplit(target)
                request = Request(method, parts.path, parts.query, headers, body)
                async with self._arrived:
                    self.requests.append(request)
                    self._arrived.notify_all()
                reply = await self._reply(request)
                writer.write(reply.encode())
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _reply(self, request: Request) -> Reply:
        if self._script:
            return self._script.popleft()
        if self._handler is not None:
            reply = self._handler(request)
            return await reply if isinstance(reply, Awaitable) else reply
        return self._default


# -- TLS -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def self_signed(folder: Path) -> Certificate:
    """A certificate for 127.0.0.1 and localhost that is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notefly test peer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "peer-cert.pem", folder / "peer-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


# -- SMTP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: Any  # the client's (host, port): one value per connection

    def parsed(self) -> EmailMessage:
        message = message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(message, EmailMessage)
        return message


class MailHandler:
    """aiosmtpd handler: keeps what arrives; ``refuse[address]`` answers RCPT with a
    given reply instead (``"450 ..."``, ``"550 ..."``)."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.refuse: dict[str, str] = {}
        self._lock = threading.Condition()

    async def handle_RCPT(  # aiosmtpd's hook names
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail = Mail(str(envelope.mail_from), list(envelope.rcpt_tos), content, session.peer)
        with self._lock:
            self.mails.append(mail)
            self._lock.notify_all()
        return "250 2.0.0 Ok: queued"

    def wait_for(self, count: int, within: float = 20.0) -> list[Mail]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.mails) >= count, within):
                raise AssertionError(f"{len(self.mails)} of {count} emails in {within}s")
            return list(self.mails)


class LoopbackController(Controller):
    """aiosmtpd's threaded controller on an ephemeral port of 127.0.0.1."""

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Credentials:
    """An aiosmtpd authenticator accepting one login."""

    def __init__(self, username: str, password: str) -> None:
        self._pair = (username.encode(), password.encode())
        self.failures = 0

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and (data.login, data.password) == self._pair:
            return AuthResult(success=True)
        self.failures += 1
        return AuthResult(success=False, handled=False)


def smtp_peer(
    handler: MailHandler,
    *,
    port: int = 0,
    starttls: Certificate | None = None,
    implicit_tls: Certificate | None = None,
    credentials: Credentials | None = None,
) -> LoopbackController:
    options: dict[str, Any] = {}
    if starttls is not None:
        options.update(tls_context=starttls.server_context(), require_starttls=True)
    if credentials is not None:
        options.update(authenticator=credentials, auth_required=True)
    controller = LoopbackController(
        handler,
        hostname="127.0.0.1",
        port=port,
        ssl_context=implicit_tls.server_context() if implicit_tls else None,
        **options,
    )
    controller.start()
    return controller
