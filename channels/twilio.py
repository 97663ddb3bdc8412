"""SMS over an HTTP API in the shape of Twilio's Messages resource.

``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, with HTTP
basic auth (account SID, auth token): ``To``, ``From`` or ``MessagingServiceSid``,
``Body`` and, when configured, ``StatusCallback``. The answer's ``sid`` is recorded as
the provider's message id. 429 (after ``Retry-After``) and 5xx are retried; any other
4xx is permanent, with the service's own error code and message.

Settings: ``NOTEFLY_TWILIO_ACCOUNT_SID`` and the secret ``NOTEFLY_TWILIO_AUTH_TOKEN``
(required); ``NOTEFLY_TWILIO_FROM`` (an E.164 number or an alphanumeric sender id) or
``NOTEFLY_TWILIO_MESSAGING_SERVICE_SID``; ``NOTEFLY_TWILIO_BASE_URL``
(https://api.twilio.com, or any service speaking the same API);
``NOTEFLY_TWILIO_STATUS_CALLBACK`` (a URL); ``NOTEFLY_TWILIO_TIMEOUT`` (seconds, 10).
"""

from __future__ import annotations

import re

import httpx
import structlog

from channels._http import make_client, post, raise_for_status
from notefly.config import Settings
from notefly.domain import Rendered
from notefly.errors import ConfigurationError, PermanentChannelError
from notefly.ports import SendResult
from notefly.provider_settings import ProviderSettings
from notefly.rendering import sms_segments
from notefly.secrets import Secret
from notefly.validation import PHONE

log = structlog.get_logger("notefly.channels.twilio")

PROVIDER = "twilio"
DEFAULT_BASE_URL = "https://api.twilio.com"
SENDER_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")  # alphanumeric sender id


class TwilioSmsProvider:
    name = "sms"
    provider = PROVIDER

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        account_sid: str,
        auth_token: Secret,
        sender: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
    ) -> None:
        if not sender and not messaging_service_sid:
            raise ConfigurationError(
                "set NOTEFLY_TWILIO_FROM or NOTEFLY_TWILIO_MESSAGING_SERVICE_SID (twilio)"
            )
        if sender and not (PHONE.fullmatch(sender) or SENDER_ID.fullmatch(sender)):
            raise ConfigurationError(
                "NOTEFLY_TWILIO_FROM must be an E.164 number or an alphanumeric sender id"
            )
        self._client = client
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token.reveal())
        self._sender = sender
        self._service = messaging_service_sid
        self._status_callback = status_callback

    async def aclose(self) -> None:
        await self._client.aclose()

    def form(self, rendered: Rendered) -> dict[str, str]:
        form = {"To": rendered.to, "Body": rendered.text}
        if self._service:
            form["MessagingServiceSid"] = self._service
        else:
            assert self._sender is not None
            form["From"] = self._sender
        if self._status_callback:
            form["StatusCallback"] = self._status_callback
        return form

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        if not PHONE.fullmatch(rendered.to):
            raise PermanentChannelError(f"twilio: {rendered.to!r} is not an E.164 number")
        response = await post(
            self._client,
            self._url,
            provider=PROVIDER,
            data=self.form(rendered),
            auth=self._auth,
            headers={"Idempotency-Key": delivery_id},
        )
        raise_for_status(response, PROVIDER, _problem(response))
        try:
            answer = response.json()
            sid = str(answer["sid"])
        except (ValueError, KeyError, TypeError):
            raise PermanentChannelError("twilio: the answer names no message sid") from None
        log.info(
            "sms.accepted",
            sid=sid,
            status=answer.get("status"),
            segments=rendered.meta.get("segments") or sms_segments(rendered.text).segments,
            provider_segments=answer.get("num_segments"),
        )
        return SendResult(PROVIDER, sid)


def _problem(response: httpx.Response) -> str | None:
    """Twilio's error: ``{"code": 21211, "message": "...", "more_info": ...}``."""
    if response.is_success:
        return None
    try:
        error = response.json()
        return f"{response.status_code} error {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return None


def TwilioSmsChannel(settings: Settings) -> TwilioSmsProvider:
    """The ``sms.twilio`` provider, from settings."""
    own = ProviderSettings(settings, "TWILIO", "the twilio SMS provider")
    token = own.secret("AUTH_TOKEN", required=True)
    assert token is not None
    return TwilioSmsProvider(
        make_client(own.seconds("TIMEOUT", 10.0)),
        base_url=own.url("BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL,
        account_sid=own.required("ACCOUNT_SID"),
        auth_token=token,
        sender=own.get("FROM"),
        messaging_service_sid=own.get("MESSAGING_SERVICE_SID"),
        status_callback=own.url("STATUS_CALLBACK"),
    )
