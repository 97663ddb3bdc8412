"""Secrets from the environment or a secrets file, the data-dir key, VAPID keys, and the
provider settings reader: clear errors that never echo a secret."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from notefly.config import Settings
from notefly.errors import ConfigurationError
from notefly.provider_settings import ProviderSettings
from notefly.secrets import Secret, read_secrets_file, secret, secret_key
from notefly.vapid import b64url, create_keys, load_private_key, public_key_b64url

HIDDEN = "hunter2-but-longer-than-you-think"  # a test credential


def test_a_secret_never_shows_itself() -> None:
    value = Secret(HIDDEN)
    assert value.reveal() == HIDDEN
    assert HIDDEN not in repr(value) and HIDDEN not in str(value) and HIDDEN not in f"{value}"
    assert HIDDEN not in repr({"password": value})


def test_settings_do_not_show_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"NOTEFLY_SMTP_PASSWORD": HIDDEN, "NOTEFLY_DATA_DIR": "x"})
    assert settings.env["NOTEFLY_SMTP_PASSWORD"] == HIDDEN
    assert HIDDEN not in repr(settings)


def test_the_environment_wins_over_the_secrets_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(
        "# comment\n\nNOTEFLY_SMTP_PASSWORD = 'from-file'\n"
        'export NOTEFLY_TWILIO_AUTH_TOKEN="tok"\n'
    )
    env = {"NOTEFLY_SECRETS_FILE": str(path)}
    from_file = Settings(data_dir=tmp_path, env=env)
    assert read_secrets_file(path) == {
        "NOTEFLY_SMTP_PASSWORD": "from-file",
        "NOTEFLY_TWILIO_AUTH_TOKEN": "tok",
    }
    assert (secret(from_file, "SMTP_PASSWORD") or Secret("")).reveal() == "from-file"
    both = Settings(data_dir=tmp_path, env={**env, "NOTEFLY_SMTP_PASSWORD": "from-env"})
    assert (secret(both, "SMTP_PASSWORD") or Secret("")).reveal() == "from-env"
    assert secret(from_file, "NOTHING") is None


def test_a_malformed_secrets_file_names_the_line_not_its_content(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"NOTEFLY_A=1\n{HIDDEN}\n")
    with pytest.raises(ConfigurationError, match="line 2") as caught:
        read_secrets_file(path)
    assert HIDDEN not in caught.value.message
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_secrets_file(tmp_path / "missing")


def test_the_link_key_is_generated_once_and_shared(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with ThreadPoolExecutor(8) as pool:  # processes starting at once agree on one key
        keys = set(pool.map(lambda _: secret_key(settings), range(16)))
    assert len(keys) == 1
    [key] = keys
    assert len(key) >= 32 and secret_key(settings) == key
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / "secret.key").st_mode)
    assert mode == 0o600
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secret.key"]


def test_a_configured_link_key_is_used_and_must_be_long(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, env={"NOTEFLY_SECRET_KEY": HIDDEN})
    assert secret_key(settings) == HIDDEN.encode()
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(ConfigurationError, match="too short") as caught:
        secret_key(Settings(data_dir=tmp_path, env={"NOTEFLY_SECRET_KEY": "short"}))
    assert "short" not in caught.value.message.replace("too short", "")


def test_vapid_keys_are_created_once(tmp_path: Path) -> None:
    public = create_keys(tmp_path)
    assert create_keys(tmp_path) == public  # a second run keeps the pair
    key = load_private_key(Settings(data_dir=tmp_path))
    assert public_key_b64url(key) == public and len(public) == 87  # 65 bytes, base64url
    assert stat.S_IMODE(os.stat(tmp_path / "vapid_private.pem").st_mode) == 0o600


def test_a_vapid_key_may_come_from_a_secret(tmp_path: Path) -> None:
    create_keys(tmp_path / "elsewhere")
    pem = (tmp_path / "elsewhere" / "vapid_private.pem").read_text()
    key = load_private_key(Settings(data_dir=tmp_path / "elsewhere"))
    raw = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    for given in (pem, raw):
        found = load_private_key(
            Settings(data_dir=tmp_path, env={"NOTEFLY_VAPID_PRIVATE_KEY": given})
        )
        assert public_key_b64url(found) == public_key_b64url(key)
    with pytest.raises(ConfigurationError, match="NOTEFLY_VAPID_PRIVATE_KEY"):
        load_private_key(Settings(data_dir=tmp_path, env={"NOTEFLY_VAPID_PRIVATE_KEY": "abc"}))
    assert (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        == pem
    )


def test_provider_settings_name_what_is_wrong(tmp_path: Path) -> None:
    own = ProviderSettings(
        Settings(
            data_dir=tmp_path,
            env={"NOTEFLY_X_PORT": "0", "NOTEFLY_X_FLAG": "perhaps", "NOTEFLY_X_URL": HIDDEN},
        ),
        "X",
        "the x provider",
    )
    cases = {
        "NOTEFLY_X_HOST is not set": lambda: own.required("HOST"),
        "NOTEFLY_X_PORT must be at least 1": lambda: own.integer("PORT", 25),
        "NOTEFLY_X_FLAG must be 1 or 0": lambda: own.flag("FLAG"),
        "NOTEFLY_X_URL must be an http": lambda: own.url("URL"),
        "NOTEFLY_X_TLS must be one of a, b": lambda: own.choice("TLS", ("a", "b"), "c"),
    }
    for expected, read in cases.items():
        with pytest.raises(ConfigurationError) as caught:
            read()
        assert expected in caught.value.message and "the x provider" in caught.value.message
        assert HIDDEN not in caught.value.message
