"""VAPID keys (RFC 8292): the key pair that identifies this server to push services.

``notefly keys`` creates the pair once in the data dir; browsers subscribe with the
public key, so replacing the pair orphans every existing subscription, and
``create_keys`` therefore keeps a pair that exists. The private key may instead come
from the secret ``NOTEFLY_VAPID_PRIVATE_KEY`` (PEM, or the raw key in base64url).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notefly.config import Settings
from notefly.errors import ConfigurationError
from notefly.secrets import secret

KEY_FILE = "vapid_private.pem"
SECRET_NAME = "VAPID_PRIVATE_KEY"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_key_b64url(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as browsers take it (``applicationServerKey``): the uncompressed
    P-256 point, base64url without padding."""
    point = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


def create_keys(data_dir: Path) -> str:
    """Create the VAPID key pair in ``data_dir`` unless it exists; return the public key."""
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            with contextlib.suppress(FileExistsError):  # another process was first
                os.link(draft, path)
        finally:
            draft.unlink()
    return public_key_b64url(_from_pem(path.read_bytes(), str(path)))


def load_private_key(settings: Settings) -> ec.EllipticCurvePrivateKey:
    """The configured private key.

    Raises:
        ConfigurationError: there is none, or it is not a P-256 key.
    """
    configured = secret(settings, SECRET_NAME)
    if configured is not None:
        return _from_text(configured.reveal())
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        raise ConfigurationError(
            f"no VAPID key: run `notefly keys --data-dir {settings.data_dir}` once, or set"
            f" NOTEFLY_{SECRET_NAME}"
        )
    return _from_pem(path.read_bytes(), str(path))


def _from_text(text: str) -> ec.EllipticCurvePrivateKey:
    if text.lstrip().startswith("-----BEGIN"):
        return _from_pem(text.encode(), f"NOTEFLY_{SECRET_NAME}")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"NOTEFLY_{SECRET_NAME} is neither PEM nor base64url") from None
    if len(raw) != 32:
        raise ConfigurationError(f"NOTEFLY_{SECRET_NAME} is not a raw 32-byte P-256 key")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def _from_pem(pem: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{where} holds no readable private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigurationError(f"{where} is not a P-256 (prime256v1) key")
    return key
