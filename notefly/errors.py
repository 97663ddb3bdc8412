"""The one exception tree of Notefly.

Every error a caller can meet is a ``NoteflyError``. Each carries a stable ``code``
(clients switch on it), the HTTP ``status`` the services answer with, a human
``message`` and optional ``details``. The services turn any ``NoteflyError`` into
``{"error": {"code", "message", "details"}}``; nothing else reaches a client.

    NoteflyError
    +-- BadRequest             400  the body is not JSON at all
    +-- NotFound               404  a category, user, message or notification is unknown
    +-- Conflict               409  the thing already exists
    +-- PayloadTooLarge        413  over the configured size limit
    +-- Overloaded             429  too much work waiting: Retry-After says when to retry
    +-- StoreUnavailable       503  the database cannot be reached: Retry-After
    +-- UnsupportedMediaType   415  neither JSON nor an HTML form
    +-- InvalidInput           422  well-formed but unacceptable (no address for a channel)
    +-- ConfigurationError          bad settings, raised at start-up, never at request time
    +-- ChannelError                a provider could not send
        +-- TransientChannelError   worth retrying later (timeouts, 429, 5xx)
        |   +-- CircuitOpen         the provider's circuit breaker is open: not sent,
        |                           not an attempt; wait ``retry_after`` seconds
        +-- PermanentChannelError   retrying cannot help (bad address, 4xx)
"""

from __future__ import annotations

import sqlite3
from typing import Any


class NoteflyError(Exception):
    code = "notefly_error"
    status = 500

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class NotFound(NoteflyError):
    code = "not_found"
    status = 404


class Conflict(NoteflyError):
    code = "conflict"
    status = 409


class InvalidInput(NoteflyError):
    code = "invalid_input"
    status = 422


class ConfigurationError(NoteflyError):
    code = "configuration_error"


class ChannelError(NoteflyError):
    code = "channel_error"
    status = 502


class TransientChannelError(ChannelError):
    code = "channel_transient"

    def __init__(self, message: str, *, retry_after: float | None = None, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class CircuitOpen(TransientChannelError):
    """The provider was not called: its circuit breaker holds deliveries back.

    Not an attempt: the delivery keeps its attempts and waits ``retry_after`` seconds
    (what is left of the cool-down), then tries again.
    """

    code = "circuit_open"
    attempted = False

    def __init__(self, message: str, *, retry_after: float, channel: str, provider: str):
        super().__init__(message, retry_after=retry_after)
        self.channel = channel
        self.provider = provider


class PermanentChannelError(ChannelError):
    """Retrying cannot help this delivery.

    ``provider_fault``: the provider refuses every delivery, not this recipient (rejected
    credentials, a suspended account); only those count toward its circuit breaker.
    """

    code = "channel_permanent"

    def __init__(self, message: str, *, details: Any = None, provider_fault: bool = False):
        super().__init__(message, details=details)
        self.provider_fault = provider_fault


class BadRequest(NoteflyError):
    code = "bad_request"
    status = 400


class UnsupportedMediaType(NoteflyError):
    code = "unsupported_media_type"
    status = 415


class Overloaded(NoteflyError):
    """More work is waiting than the node may hold: try again later."""

    code = "overloaded"
    status = 429

    def __init__(self, message: str, *, retry_after: float, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class StoreUnavailable(NoteflyError):
    code = "store_unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: float = 5.0, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


def is_store_failure(exc: BaseException) -> bool:
    """A database that cannot be reached or written (not a bug in a query)."""
    # Not IntegrityError and the like: those are bugs, not an unavailable store.
    if isinstance(exc, sqlite3.OperationalError | OSError) or type(exc) is sqlite3.DatabaseError:
        return True
    # asyncpg is imported only with PostgreSQL: recognise its connection errors by name.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"PostgresConnectionError", "InterfaceError", "CannotConnectNowError"})


class PayloadTooLarge(NoteflyError):
    code = "payload_too_large"
    status = 413
