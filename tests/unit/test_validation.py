"""The checks on user-supplied text: what they refuse, by Unicode's own definition."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from notefly import validation

EVERY_CHARACTER = "".join(chr(i) for i in range(sys.maxunicode + 1))


def test_the_control_checks_find_exactly_unicodes_control_characters() -> None:
    controls = {ch for ch in EVERY_CHARACTER if unicodedata.category(ch) == "Cc"}

    assert set(validation.CONTROLS.findall(EVERY_CHARACTER)) == controls
    assert set(validation.TEXT_CONTROLS.findall(EVERY_CHARACTER)) == controls - set("\t\n\r")


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "nul\x00", "del\x7f", "next line\x85"])
def test_a_one_line_value_refuses_every_control_character(value: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        validation.printable(value)


@pytest.mark.parametrize("value", ["nul\x00", "bell\x07", "escape\x1b[31m", "csi\x9b"])
def test_text_refuses_control_characters_other_than_line_breaks_and_tabs(value: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        validation.text(value)


def test_text_keeps_line_breaks_tabs_and_everything_printable() -> None:
    value = "Rates up\r\n\tby a quarter point: 0,25 % — ça monte 📈 \u2028 done"
    assert validation.text(value) == value
    assert validation.printable("Rates up — ça monte 📈") == "Rates up — ça monte 📈"
