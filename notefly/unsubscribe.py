"""One-click unsubscribe links (RFC 8058): signed, so they need no login.

A link names a user and a category and carries an HMAC-SHA256 of both under the
secret key; following it (a POST, as mail clients do) removes that one subscription.
Links do not expire: a person may unsubscribe from an old email.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from notefly.config import Settings
from notefly.errors import NotFound
from notefly.secrets import secret_key

_PURPOSE = b"notefly/unsubscribe/v1\x00"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeLinks:
    def __init__(self, key: bytes, base_url: str) -> None:
        self._key = key
        self._base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks:
        return cls(secret_key(settings), settings.client_url)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _PURPOSE + payload, hashlib.sha256).digest()

    def token(self, user_id: str, category_id: str) -> str:
        payload = json.dumps([user_id, category_id], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def url(self, user_id: str, category_id: str) -> str:
        return f"{self._base_url}/unsubscribe/{self.token(user_id, category_id)}"

    def read(self, token: str) -> tuple[str, str]:
        """The (user id, category id) a token names.

        Raises:
            NotFound: the token is malformed or its signature does not match.
        """
        invalid = NotFound("this unsubscribe link is not valid", code="invalid_link")
        body, _, mac = token.partition(".")
        try:
            payload, signature = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            raise invalid from None
        if not hmac.compare_digest(signature, self._mac(payload)):
            raise invalid
        try:
            user_id, category_id = json.loads(payload)
        except (ValueError, TypeError):
            raise invalid from None
        if not isinstance(user_id, str) or not isinstance(category_id, str):
            raise invalid
        return user_id, category_id
