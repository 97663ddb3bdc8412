"""The ``NOTEFLY_<PREFIX>_*`` settings of one provider, read and checked at start-up.

Providers build one of these from ``Settings`` when they are built, so a missing or
malformed setting stops start-up with a message naming it. Values are never echoed
back in an error: a misplaced password must not end up in a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from notefly.config import Settings
from notefly.errors import ConfigurationError
from notefly.secrets import Secret, secret

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


class ProviderSettings:
    def __init__(self, settings: Settings, prefix: str, provider: str) -> None:
        self.settings = settings
        self._prefix = prefix
        self._provider = provider

    def name(self, key: str) -> str:
        return f"NOTEFLY_{self._prefix}_{key}"

    def _bad(self, key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"{self.name(key)} {problem} (needed by {self._provider})")

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self.settings.env.get(self.name(key), "").strip()
        return value or default

    def required(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise self._bad(key, "is not set")
        return value

    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        found = secret(self.settings, f"{self._prefix}_{key}")
        if found is None and required:
            raise self._bad(key, "is not set (in the environment or NOTEFLY_SECRETS_FILE)")
        return found

    def integer(self, key: str, default: int, *, minimum: int = 1) -> int:
        raw = self.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self._bad(key, "is not a whole number") from None
        if value < minimum:
            raise self._bad(key, f"must be at least {minimum}")
        return value

    def seconds(self, key: str, default: float) -> float:
        raw = self.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self._bad(key, "is not a number of seconds") from None
        if not value > 0:
            raise self._bad(key, "must be more than 0")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = (self.get(key) or default).lower()
        if value not in choices:
            raise self._bad(key, f"must be one of {', '.join(choices)}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        raw = self.get(key)
        if raw is None:
            return default
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise self._bad(key, "must be 1 or 0")

    def url(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, default)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._bad(key, "must be an http:// or https:// URL")
        return value.rstrip("/")
