"""structlog set-up: JSON lines when not on a terminal, a readable console on one.

Call ``configure_logging`` once at start-up. Actor threads do not inherit contextvars,
so actors pass message and delivery ids explicitly to every event.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# The documented fields of a JSON line, in this order, before any other: what a log
# stack indexes. ``event`` names what happened (``delivery.sent``, ``delivery.failed``,
# ``notification.recorded``...); the others are there when the event concerns them.
LOG_FIELDS = (
    "timestamp",
    "level",
    "event",
    "message_id",
    "delivery_id",
    "user",
    "channel",
    "provider",
    "latency_ms",
    "attempt",
)


def order_fields(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """Put the documented fields first, in one order, so every line reads alike."""
    first = {k: event[k] for k in LOG_FIELDS if k in event}
    return {**first, **{k: v for k, v in event.items() if k not in first}}


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            order_fields,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        # One write per line (print() writes the line and its newline apart): with
        # several worker processes on one stderr, lines never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
