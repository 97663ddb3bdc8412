"""A small HTTP/1.1 load generator on asyncio streams, for paced (open-loop) load.

wrk drives the closed-loop ingest test; this drives what wrk cannot: requests at a
fixed rate whose client-side send time is kept per request (the latency scenario),
and small bursts. Keep-alive connections, Content-Length or chunked bodies; nothing
else of HTTP is needed against the services under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(RuntimeError):
    """The server answered something that is not HTTP/1.1 as this client reads it."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def build_request(method: str, host: str, path: str, body: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the (lower-cased) headers of a response head.

    Raises:
        HttpError: the status line is not ``HTTP/1.x <code> ...``.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Connection:
    """One keep-alive connection; reopened when the server closed it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"need http://host:port, got {url!r}")
        self.host, self.port = parts.hostname, parts.port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(build_request(method, f"{self.host}:{self.port}", path, body))
        await self._writer.drain()
        status, headers = parse_head(await self._reader.readuntil(b"\r\n\r\n"))
        if "content-length" in headers:
            payload = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            payload = await _read_chunked(self._reader)
        else:
            raise HttpError("a response without Content-Length or chunked body")
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, headers, payload)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def get(url: str, path: str, within: float = 5.0) -> Response:
    """One request on a new connection."""
    conn = Connection(url)
    try:
        return await asyncio.wait_for(conn.request("GET", path), within)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class Sent:
    """One request of a paced run: when it was due, sent and answered, and the answer."""

    index: int
    due: float  # monotonic
    sent: float  # monotonic
    sent_wall: float  # time.time() when it was sent: the client's publish time
    answered: float  # monotonic
    status: int  # 0: no answer (connection error or timeout)
    body: bytes


async def paced(
    url: str,
    path: str,
    *,
    rate: float,
    count: int,
    body: Callable[[int], bytes],
    connections: int = 32,
    request_seconds: float = 10.0,
) -> list[Sent]:
    """Send ``count`` POSTs at ``rate`` a second, each due at ``start + i / rate``.

    Open loop: request i is sent at its time whatever happened to the others, as long
    as one of ``connections`` is free (when none is, it goes late: ``sent - due``
    tells by how much). Each request waits ``request_seconds`` at most.
    """
    if rate <= 0 or count < 0:
        raise ValueError("rate must be positive and count not negative")
    results: list[Sent] = []
    next_index = 0
    start = time.monotonic() + 0.05

    async def worker() -> None:
        nonlocal next_index
        conn = Connection(url)
        try:
            while next_index < count:
                i = next_index
                next_index += 1
                due = start + i / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                sent, sent_wall = time.monotonic(), time.time()
                try:
                    # A timeout scope, not wait_for: no task per request in the client
                    # that shares the machine with the servers it measures.
                    async with asyncio.timeout(request_seconds):
                        response = await conn.request("POST", path, body(i))
                    status, payload = response.status, response.body
                except (OSError, TimeoutError, asyncio.IncompleteReadError, HttpError):
                    await conn.close()
                    status, payload = 0, b""
                results.append(Sent(i, due, sent, sent_wall, time.monotonic(), status, payload))
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(connections, count)))))
    results.sort(key=lambda s: s.index)
    return results


async def burst(
    url: str, path: str, bodies: list[bytes], request_seconds: float = 30.0
) -> list[Sent]:
    """Send all ``bodies`` at once, one new connection each."""
    return await paced(
        url,
        path,
        rate=1e9,
        count=len(bodies),
        body=bodies.__getitem__,
        connections=len(bodies),
        request_seconds=request_seconds,
    )
