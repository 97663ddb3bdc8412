"""SMS over a Twilio-shaped API, against a local HTTP server that checks the exact request
and answers as the real Messages resource does, errors included."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from channels.twilio import TwilioSmsChannel, TwilioSmsProvider
from notefly.config import Settings
from notefly.domain import Rendered
from notefly.errors import ConfigurationError, PermanentChannelError, TransientChannelError
from notefly.rendering import sms_segments
from tests.peers import HttpPeer, Reply, Request

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-auth-token-0f1e2d3c4b5a"  # a test credential
PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"


def created(request: Request) -> Reply:
    """What Twilio answers to a message it accepted (trimmed)."""
    form = request.form()
    return Reply(
        201,
        {
            "sid": "SM" + "0" * 30 + "42",
            "account_sid": SID,
            "to": form["To"],
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form["Body"],
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "error_code": None,
        },
    )


def twilio_error(status: int, code: int, message: str, **headers: str) -> Reply:
    return Reply(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        headers,
    )


def sms(
    text: str = "Rates up: the key rate rose 0.25 points.", to: str = "+14155550123"
) -> Rendered:
    cost = sms_segments(text)
    return Rendered("sms", to, text, meta={"segments": cost.segments, "encoding": cost.encoding})


def provider(tmp_path: Path, peer: HttpPeer, **env: str) -> TwilioSmsProvider:
    base = {
        "NOTEFLY_TWILIO_ACCOUNT_SID": SID,
        "NOTEFLY_TWILIO_AUTH_TOKEN": TOKEN,
        "NOTEFLY_TWILIO_FROM": "+14155550100",
        "NOTEFLY_TWILIO_BASE_URL": peer.url,
        "NOTEFLY_TWILIO_STATUS_CALLBACK": "https://notefly.example.org/twilio/status",
    }
    merged = {**base, **env}
    return TwilioSmsChannel(Settings(data_dir=tmp_path, env={k: v for k, v in merged.items() if v}))


async def test_the_request_has_exactly_the_shape_of_the_messages_resource(tmp_path: Path) -> None:
    async with HttpPeer(created) as peer:
        channel = provider(tmp_path, peer)
        with capture_logs() as logs:
            result = await channel.send(sms(), delivery_id="d_sms1")
        await channel.aclose()

    [request] = peer.requests
    assert (request.method, request.path) == ("POST", PATH)
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    )
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form() == {
        "To": "+14155550123",
        "From": "+14155550100",
        "Body": "Rates up: the key rate rose 0.25 points.",
        "StatusCallback": "https://notefly.example.org/twilio/status",
    }
    assert request.headers["idempotency-key"] == "d_sms1"
    assert (result.provider, result.provider_message_id) == ("twilio", "SM" + "0" * 30 + "42")
    [accepted] = [e for e in logs if e["event"] == "sms.accepted"]
    assert accepted["segments"] == 1 and accepted["provider_segments"] == "1"
    assert TOKEN not in repr(logs)


async def test_a_messaging_service_replaces_from(tmp_path: Path) -> None:
    async with HttpPeer(created) as peer:
        channel = provider(
            tmp_path,
            peer,
            NOTEFLY_TWILIO_FROM="",
            NOTEFLY_TWILIO_STATUS_CALLBACK="",
            NOTEFLY_TWILIO_MESSAGING_SERVICE_SID="MG0123456789abcdef0123456789abcdef",
        )
        await channel.send(sms(), delivery_id="d_1")
        await channel.aclose()
    assert peer.requests[0].form() == {
        "To": "+14155550123",
        "MessagingServiceSid": "MG0123456789abcdef0123456789abcdef",
        "Body": "Rates up: the key rate rose 0.25 points.",
    }


async def test_a_long_unicode_text_is_sent_whole_and_its_segments_counted(tmp_path: Path) -> None:
    text = "Zinsen steigen — 🚀 " * 10  # UCS-2 (🚀 is two units): 200 units, 67 a segment
    async with HttpPeer(created) as peer:
        channel = provider(tmp_path, peer)
        with capture_logs() as logs:
            await channel.send(sms(text), delivery_id="d_1")
        await channel.aclose()
    assert peer.requests[0].form()["Body"] == text
    [accepted] = [e for e in logs if e["event"] == "sms.accepted"]
    assert accepted["segments"] == sms_segments(text).segments == 3


@pytest.mark.parametrize(
    ("reply", "error", "said", "retry_after"),
    [
        (
            twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "12"}),
            TransientChannelError,
            "20429",
            12.0,
        ),
        (twilio_error(503, 20503, "Service Unavailable"), TransientChannelError, "20503", None),
        (Reply(502, "<html>Bad gateway</html>"), TransientChannelError, "502", None),
        (
            twilio_error(400, 21211, "The 'To' number +14155550123 is not a valid phone number."),
            PermanentChannelError,
            "21211",
            None,
        ),
        (twilio_error(401, 20003, "Authenticate"), PermanentChannelError, "20003", None),
        (
            twilio_error(404, 20404, "The requested resource was not found"),
            PermanentChannelError,
            "20404",
            None,
        ),
    ],
)
async def test_errors_are_typed_from_the_status_and_name_the_service_error(
    tmp_path: Path, reply: Reply, error: type[Exception], said: str, retry_after: float | None
) -> None:
    async with HttpPeer(default=reply) as peer:
        channel = provider(tmp_path, peer)
        with capture_logs() as logs, pytest.raises(error, match=said) as caught:
            await channel.send(sms(), delivery_id="d_1")
        await channel.aclose()
    if isinstance(caught.value, TransientChannelError):
        assert caught.value.retry_after == retry_after
    assert TOKEN not in str(caught.value) and TOKEN not in repr(logs)


async def test_an_answer_without_a_sid_is_an_error(tmp_path: Path) -> None:
    async with HttpPeer(default=Reply(201, {"status": "queued"})) as peer:
        channel = provider(tmp_path, peer)
        with pytest.raises(PermanentChannelError, match="sid"):
            await channel.send(sms(), delivery_id="d_1")
        await channel.aclose()


@pytest.mark.parametrize(
    "to", ["4155550123", "+0155550123", "+1 415 555 0123", "", "+1415555012345678"]
)
async def test_a_number_that_is_not_e164_is_refused_before_any_request(
    tmp_path: Path, to: str
) -> None:
    async with HttpPeer(created) as peer:
        channel = provider(tmp_path, peer)
        with pytest.raises(PermanentChannelError, match=r"E\.164"):
            await channel.send(sms(to=to), delivery_id="d_1")
        await channel.aclose()
    assert peer.requests == []


async def test_the_auth_token_may_come_from_the_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f'export NOTEFLY_TWILIO_AUTH_TOKEN="{TOKEN}"\n')
    async with HttpPeer(created) as peer:
        channel = provider(
            tmp_path, peer, NOTEFLY_TWILIO_AUTH_TOKEN="", NOTEFLY_SECRETS_FILE=str(secrets)
        )
        await channel.send(sms(), delivery_id="d_1")
        await channel.aclose()
    assert peer.requests[0].headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NOTEFLY_TWILIO_ACCOUNT_SID": ""}, "NOTEFLY_TWILIO_ACCOUNT_SID"),
        ({"NOTEFLY_TWILIO_AUTH_TOKEN": ""}, "NOTEFLY_TWILIO_AUTH_TOKEN"),
        ({"NOTEFLY_TWILIO_FROM": ""}, "NOTEFLY_TWILIO_FROM"),
        ({"NOTEFLY_TWILIO_FROM": "+1 (415) 555"}, "NOTEFLY_TWILIO_FROM"),
        ({"NOTEFLY_TWILIO_BASE_URL": "api.twilio"}, "NOTEFLY_TWILIO_BASE_URL"),
        ({"NOTEFLY_TWILIO_STATUS_CALLBACK": "status"}, "NOTEFLY_TWILIO_STATUS_CALLBACK"),
        ({"NOTEFLY_TWILIO_TIMEOUT": "soon"}, "NOTEFLY_TWILIO_TIMEOUT"),
    ],
)
async def test_bad_settings_fail_at_start_up_naming_the_setting(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    async with HttpPeer() as peer:
        with pytest.raises(ConfigurationError, match=named) as caught:
            provider(tmp_path, peer, **env)
    assert TOKEN not in caught.value.message
