"""What the HTTP providers share: their client, timing, and the reading of answers.

Each provider holds one ``httpx.AsyncClient`` (connections are reused between sends)
and closes it in ``aclose``. Answers are classified one way everywhere: 2xx is
success; 408, 425, 429 and 5xx are worth retrying (after ``Retry-After`` when the
service says); any other answer, redirects included, is permanent.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

import notefly
from notefly.errors import PermanentChannelError, TransientChannelError

log = structlog.get_logger("notefly.channels.http")

USER_AGENT = f"Notefly/{notefly.__version__}"
RETRY_STATUSES = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 3600.0  # seconds; a longer wait is capped, not obeyed
DETAIL_CHARS = 200


def make_client(
    timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        transport=transport,
    )


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (it may be a number or an HTTP date), capped."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def host_of(url: str) -> str:
    """What may be logged of a URL: its host (paths and queries may hold tokens)."""
    return urlsplit(url).hostname or "?"


async def post(
    client: httpx.AsyncClient, url: str, *, provider: str, **kwargs: Any
) -> httpx.Response:
    """POST, timing the provider; a transport failure is a transient error."""
    started = time.perf_counter()
    try:
        response = await client.post(url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientChannelError(
            f"{provider}: {host_of(url)} timed out ({type(exc).__name__})"
        ) from None
    except httpx.HTTPError as exc:
        raise TransientChannelError(
            f"{provider}: cannot reach {host_of(url)} ({type(exc).__name__})"
        ) from None
    log.debug(
        "provider.http",
        provider=provider,
        host=host_of(url),
        status=response.status_code,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    return response


def detail(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text[:DETAIL_CHARS] + ("…" if len(text) > DETAIL_CHARS else "")


def raise_for_status(response: httpx.Response, provider: str, message: str | None = None) -> None:
    """Nothing for a 2xx; otherwise the typed error the answer means."""
    status = response.status_code
    if 200 <= status < 300:
        return
    said = message or f"{status} {response.reason_phrase}: {detail(response)}".rstrip(": ")
    if status in RETRY_STATUSES or status >= 500:
        raise TransientChannelError(f"{provider}: {said}", retry_after=retry_after(response))
    raise PermanentChannelError(f"{provider}: {said}")
