"""Checks on user-supplied values, shared by the use cases and both HTTP services.

They raise ``ValueError`` with a message meant for a person; pydantic turns that into
a 422 at the HTTP edge, and ``Directory`` into ``InvalidInput`` for any other caller.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from typing import Any

# The WHATWG form-validation grammar for an email address (what browsers accept in
# <input type=email>), plus a dot in the domain: an address that can get mail.
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
# E.164; [0-9] rather than \d, which also matches other scripts' digits.
PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
# These name the server's own zone rather than a place, so they mean nothing for a user.
HOST_ZONES = frozenset({"localtime", "posixrules"})
# Unicode's control characters (general category Cc) are exactly C0, DEL and C1, and the
# standard keeps that category closed. One regular expression finds them at C speed; a
# Python test per character cost about 0.65 ms for a 10,000-character body.
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same, but for line breaks and tabs, which belong in a message body.
TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(value: str) -> str:
    # A name ends up in email headers and SMS text: a control character (a newline,
    # a NUL) there is at best garbage and at worst a header injection.
    if CONTROLS.search(value):
        raise ValueError("control characters (newlines, tabs, ...) are not allowed")
    return value


MAX_DATA_CHARS = 8192  # template data, as compact JSON


def text(value: str) -> str:
    # Other control characters do not belong in text (and PostgreSQL cannot store a NUL
    # at all, in text or in JSON).
    if TEXT_CONTROLS.search(value):
        raise ValueError("control characters other than line breaks and tabs are not allowed")
    return value


def template_data(value: dict[str, Any]) -> dict[str, Any]:
    """Values a publisher hands to the templates: bounded in size, and no NUL anywhere."""
    if len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) > MAX_DATA_CHARS:
        raise ValueError(f"at most {MAX_DATA_CHARS} characters as compact JSON")
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            raise ValueError("a NUL character (\\u0000) is not allowed")
    return value


def email(value: str) -> str:
    if not EMAIL.fullmatch(value):
        raise ValueError("not a valid email address, e.g. ada@example.com")
    return value


def phone(value: str) -> str:
    if not PHONE.fullmatch(value):
        raise ValueError("use E.164: '+', the country code and the number, e.g. +14155550123")
    return value


def timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError("not an IANA time zone name, e.g. Europe/Paris") from None
    if value in HOST_ZONES:
        raise ValueError("not an IANA time zone name, e.g. Europe/Paris")
    return value
