"""Checks on user-supplied values, shared by the use cases and both HTTP services.

They raise ``ValueError`` with a message meant for a person; pydantic turns that into
a 422 at the HTTP edge, and ``Directory`` into ``InvalidInput`` for any other caller.
"""

from __future__ import annotations

import json
import re
import unicodedata
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


def printable(value: str) -> str:
    # A name ends up in email headers and SMS text: a control character (a newline,
    # a NUL) there is at best garbage and at worst a header injection.
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("control characters (newlines, tabs, ...) are not allowed")
    return value


# Line breaks and tabs belong in a message body; other control characters do not (and
# PostgreSQL cannot store a NUL at all, in text or in JSON).
_TEXT_CONTROLS = frozenset("\t\n\r")
MAX_DATA_CHARS = 8192  # template data, as compact JSON


def text(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" and ch not in _TEXT_CONTROLS for ch in value):
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
