"""Settings, read from the environment once at start-up.

Every setting has an environment variable ``NOTEFLY_<NAME>``; the CLI's flags win over
the environment. Nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from notefly.errors import ConfigurationError
from notefly.schedule import Throttle

DEFAULT_CHANNELS = ("sms", "email", "push")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path(".notefly")
    # sqlite:///path/to/file.db (default: <data_dir>/notefly.db) or postgresql://...
    database_url: str | None = None
    database_pool_size: int = 10  # PostgreSQL connections per process
    broker_host: str = "127.0.0.1"
    broker_port: int = 5000
    client_host: str = "127.0.0.1"
    client_port: int = 5001
    broker_url: str | None = None  # where the client links to the broker's pages
    # The client as people reach it (links in emails); default: http://<client host>:<port>
    client_public_url: str | None = None
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    providers: Mapping[str, str] = field(default_factory=dict)  # channel -> provider
    # A worker's shards share its one GIL: more of them render nothing in parallel, and
    # each is one more thread that the writer, holding SQLite's write lock, waits for to
    # hand back the GIL. 1 against 4 (fan-out scenario, three alternating runs each):
    # 1.02-1.06x against 0.82-0.89x of the plain loop, CPU 50-52 against 53-57 us a
    # delivery. It costs latency: each delivery of a channel goes through the one shard
    # thread, which waits for the GIL at each hop (latency scenario: p99 49-60 ms
    # against 46-51 with four and 40-47 with two). A shard keeps up to four rounds'
    # worth of sends in flight (4 x round_size, in up to 32 rounds: ShardSettings);
    # more shards raise that for providers that wait long.
    shards_per_channel: int = 1
    node_id: str | None = None  # default: <host>:<broker port>, stable across restarts
    workers: int | None = None  # `notefly up` processes; default: the number of cores
    max_pending: int = 50_000  # deliveries a node holds in memory at most
    # fan-outs waiting for room beyond which POST /pub answers 429
    max_fanouts: int = 10_000
    heartbeat_seconds: float = 2.0
    # Silent this long: dead, its work is taken over. Generous, because on SQLite a
    # heartbeat waits for the same write lock as everything else under load.
    node_timeout_seconds: float = 30.0
    poll_seconds: float = 0.5  # how often an idle node looks for work (SQLite)
    # NOTEFLY_THROTTLE_<CHANNEL>=5/1h: at most 5 per hour per user on that channel; what
    # exceeds it is folded into a digest
    throttles: Mapping[str, Throttle] = field(default_factory=dict)
    # Subscribers a fan-out page resolves. A node plans a fan-out's next page once the
    # last one has committed, so while pages wait for the write lock the shards run
    # dry: bigger pages keep them fed (README, Performance).
    fanout_page_size: int = 1500
    # A fan-out with more users than this left is split into segments of this many,
    # which any node (or worker) may claim: one broadcast then keeps them all busy
    # (two pages of the default size: claims stay rare).
    fanout_segment_users: int = 2500
    round_size: int = 256  # deliveries one shard hands to the event loop at once
    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    send_timeout_seconds: float = 30.0
    # Circuit breaker per provider: this many consecutive failures open it for the
    # cool-down, doubled on each re-open up to the cap (see notefly.breaker).
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    breaker_max_cooldown_seconds: float = 300.0
    max_body_bytes: int = 64 * 1024
    template_dir: Path | None = None
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    # POST /users for anyone (self-service sign-up); false: an admin key is needed
    open_registration: bool = True
    # Every NOTEFLY_* variable as given, for providers to read their own settings
    # (NOTEFLY_SMTP_HOST, ...) and validate them when they are built at start-up.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets

    @property
    def store_backend(self) -> str:
        """``sqlite`` or ``postgres``, from the scheme of ``database_url``."""
        url = self.database_url
        if url is None or url.startswith("sqlite:///"):
            return "sqlite"
        if url.startswith(_POSTGRES_SCHEMES):
            return "postgres"
        raise ConfigurationError(
            f"unsupported NOTEFLY_DATABASE_URL {self.database_label!r}: use"
            " sqlite:///path/to/file.db or postgresql://user@host:port/database"
        )

    @property
    def sqlite_path(self) -> Path:
        url = self.database_url
        if url is None:
            return self.data_dir / "notefly.db"
        if not url.startswith("sqlite:///"):
            raise ConfigurationError(
                f"NOTEFLY_DATABASE_URL {self.database_label!r} is not a SQLite database"
                " (sqlite:///path/to/file.db)"
            )
        return Path(url.removeprefix("sqlite:///"))

    @property
    def database_label(self) -> str:
        """The store, fit to print: the SQLite path, or the URL without its password."""
        url = self.database_url
        if url is None or url.startswith("sqlite:///"):
            return str(self.sqlite_path)
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def node(self) -> str:
        return self.node_id or f"{socket.gethostname()}:{self.broker_port}"

    @property
    def client_url(self) -> str:
        return (self.client_public_url or f"http://{self.client_host}:{self.client_port}").rstrip(
            "/"
        )

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
            if raw is None or f.name in ("providers", "env", "throttles"):
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
        values["throttles"] = _throttles(env, channels)
        return cls(**values)


def _throttles(env: Mapping[str, str], channels: tuple[str, ...]) -> dict[str, Throttle]:
    throttles = {}
    for channel in channels:
        raw = env.get(f"NOTEFLY_THROTTLE_{channel.upper()}")
        if raw:
            try:
                throttles[channel] = Throttle.parse(raw)
            except ValueError as exc:
                raise ConfigurationError(f"NOTEFLY_THROTTLE_{channel.upper()}: {exc}") from exc
    return throttles


_INTS = {
    "database_pool_size",
    "workers",
    "max_pending",
    "max_fanouts",
    "broker_port",
    "client_port",
    "shards_per_channel",
    "fanout_page_size",
    "fanout_segment_users",
    "round_size",
    "max_attempts",
    "max_body_bytes",
    "breaker_failures",
}
_FLOATS = {
    "retry_base_seconds",
    "send_timeout_seconds",
    "breaker_cooldown_seconds",
    "breaker_max_cooldown_seconds",
    "heartbeat_seconds",
    "node_timeout_seconds",
    "poll_seconds",
}
_PATHS = {"data_dir", "template_dir"}
_BOOLS = {"open_registration"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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
    if name in _BOOLS:
        if raw.strip().lower() not in _TRUE + _FALSE:
            raise ValueError("use true or false")
        return raw.strip().lower() in _TRUE
    if name == "channels":
        channels = tuple(c.strip() for c in raw.split(",") if c.strip())
        if not channels:
            raise ValueError("name at least one channel")
        return channels
    return raw
