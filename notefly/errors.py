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
    +-- UnsupportedMediaType   415  neither JSON nor an HTML form
    +-- InvalidInput           422  well-formed but unacceptable (no address for a channel)
    +-- ConfigurationError          bad settings, raised at start-up, never at request time
    +-- ChannelError                a provider could not send
        +-- TransientChannelError   worth retrying later (timeouts, 429, 5xx)
        +-- PermanentChannelError   retrying cannot help (bad address, 4xx)
"""

from __future__ import annotations

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


class PermanentChannelError(ChannelError):
    code = "channel_permanent"


class BadRequest(NoteflyError):
    code = "bad_request"
    status = 400


class UnsupportedMediaType(NoteflyError):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLarge(NoteflyError):
    code = "payload_too_large"
    status = 413
