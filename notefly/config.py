"""Settings, read from the environment once at start-up.

Every setting has an environment variable ``NOTEFLY_<NAME>``; the CLI's flags win over
the environment. Nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from notefly.errors import ConfigurationError

DEFAULT_CHANNELS = ("sms", "email", "push")


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path(".notefly")
    database_url: str | None = None  # sqlite:///path/to/file.db; default: <data_dir>/notefly.db
    broker_host: str = "127.0.0.1"
    broker_port: int = 5000
    client_host: str = "127.0.0.1"
    client_port: int = 5001
    broker_url: str | None = None  # where the client links to the broker's pages
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    providers: Mapping[str, str] = field(default_factory=dict)  # channel -> provider
    shards_per_channel: int = 4
    fanout_page_size: int = 500
    round_size: int = 256  # deliveries one shard hands to the event loop at once
    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    entity_idle_seconds: float = 60.0
    send_timeout_seconds: float = 30.0
    max_body_bytes: int = 64 * 1024
    template_dir: Path | None = None
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    # Every NOTEFLY_* variable as given, for providers to read their own settings
    # (NOTEFLY_SMTP_HOST, ...) and validate them when they are built at start-up.
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def sqlite_path(self) -> Path:
        url = self.database_url
        if url is None:
            return self.data_dir / "notefly.db"
        if not url.startswith("sqlite:///"):
            raise ConfigurationError(
                f"unsupported NOTEFLY_DATABASE_URL {url!r}: this build stores in SQLite"
                " (sqlite:///path/to/file.db)"
            )
        return Path(url.removeprefix("sqlite:///"))

    def provider_for(self, channel: str) -> str:
        return self.providers.get(channel, "log")

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"NOTEFLY_{f.name.upper()}")
            if raw is None or f.name in ("providers", "env"):
                continue
            try:
                values[f.name] = _parse(f.name, raw)
            except ValueError as exc:
                raise ConfigurationError(
                    f"NOTEFLY_{f.name.upper()}={raw!r} is not valid: {exc}"
                ) from exc
        channels = values.get("channels", DEFAULT_CHANNELS)
        values["providers"] = {
            ch: env[f"NOTEFLY_{ch.upper()}_PROVIDER"]
            for ch in channels
            if f"NOTEFLY_{ch.upper()}_PROVIDER" in env
        }
        values["env"] = {k: v for k, v in env.items() if k.startswith("NOTEFLY_")}
        return cls(**values)


_INTS = {
    "broker_port",
    "client_port",
    "shards_per_channel",
    "fanout_page_size",
    "round_size",
    "max_attempts",
    "max_body_bytes",
}
_FLOATS = {"retry_base_seconds", "entity_idle_seconds", "send_timeout_seconds"}
_PATHS = {"data_dir", "template_dir"}


def _parse(name: str, raw: str) -> Any:
    if name in _INTS:
        value = int(raw)
        if value <= 0:
            raise ValueError("must be a positive whole number")
        return value
    if name in _FLOATS:
        return float(raw)
    if name in _PATHS:
        return Path(raw)
    if name == "channels":
        channels = tuple(c.strip() for c in raw.split(",") if c.strip())
        if not channels:
            raise ValueError("name at least one channel")
        return channels
    return raw
