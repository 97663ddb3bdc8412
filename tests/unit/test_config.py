"""Settings read from the environment: every number is read as a number."""

from __future__ import annotations

import typing
from dataclasses import fields

import pytest

from notefly.config import ConfigurationError, Settings

HINTS = typing.get_type_hints(Settings)
NUMBERS = {
    f.name: HINTS[f.name]
    for f in fields(Settings)
    if HINTS[f.name] in (int, float, int | None, float | None)
}


def variable(name: str) -> str:
    return f"NOTEFLY_{name.upper()}"


def test_there_are_numeric_settings_to_check() -> None:
    assert {"workers", "max_pending", "fanout_segment_users", "poll_seconds"} <= set(NUMBERS)


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_every_numeric_setting_is_read_as_a_number(name: str) -> None:
    settings = Settings.from_env({variable(name): "3"})

    value = getattr(settings, name)
    assert value == 3
    assert isinstance(value, float if NUMBERS[name] in (float, float | None) else int)


@pytest.mark.parametrize("name", ["workers", "max_pending", "fanout_segment_users"])
@pytest.mark.parametrize("raw", ["many", "0", "-2", "1.5"])
def test_a_count_that_is_not_a_positive_whole_number_is_refused(name: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=variable(name)):
        Settings.from_env({variable(name): raw})
