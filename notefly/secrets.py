"""Secrets: from the environment or a secrets file, and never in a log.

A secret ``NAME`` is read from ``NOTEFLY_NAME`` in the environment, else from the file
that ``NOTEFLY_SECRETS_FILE`` names: ``KEY=VALUE`` lines, ``#`` comments, optional quotes,
e.g. ``NOTEFLY_SMTP_PASSWORD=...``. Values come back wrapped in ``Secret``, whose
``repr`` and ``str`` are redacted, so that passing one to a log event by mistake
prints stars.

The key that signs links (one-click unsubscribe) is ``NOTEFLY_SECRET_KEY``; when it is
not set, a random key is generated into the data dir on the first start and shared by
every process that uses that data dir.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from notefly.config import Settings
from notefly.errors import ConfigurationError

SECRETS_FILE = "NOTEFLY_SECRETS_FILE"
SECRET_KEY = "SECRET_KEY"
KEY_FILE = "secret.key"
MIN_KEY_LENGTH = 32


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value; ``reveal()`` is the one way to read it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def read_secrets_file(path: Path) -> dict[str, str]:
    """Parse a secrets file; errors name the line, never its content."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {SECRETS_FILE} {str(path)!r}: {exc.strerror}"
        ) from None
    found: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.startswith("NOTEFLY_"):
            raise ConfigurationError(f"{SECRETS_FILE} line {number}: expected NOTEFLY_NAME=value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[key] = value
    return found


def secret(settings: Settings, name: str) -> Secret | None:
    """The secret ``NOTEFLY_<name>``, from the environment first, then the secrets file."""
    key = f"NOTEFLY_{name}"
    value = settings.env.get(key)
    if value is None and settings.env.get(SECRETS_FILE):
        value = read_secrets_file(Path(settings.env[SECRETS_FILE])).get(key)
    return Secret(value) if value else None


def secret_key(settings: Settings) -> bytes:
    """The key that signs links: ``NOTEFLY_SECRET_KEY``, or one kept in the data dir."""
    configured = secret(settings, SECRET_KEY)
    if configured is not None:
        if len(configured.reveal()) < MIN_KEY_LENGTH:
            raise ConfigurationError(
                f"NOTEFLY_{SECRET_KEY} is too short: use at least {MIN_KEY_LENGTH} characters"
            )
        return configured.reveal().encode()
    return _data_dir_key(settings.data_dir / KEY_FILE)


def _data_dir_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write aside, then link into place: linking fails if another process won the
        # race, and nobody ever reads a half-written key.
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink()
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigurationError(f"the key file {str(path)!r} is damaged: delete it to renew it")
    return key
