from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

from notefly.domain import Message, Priority, Recipient
from notefly.errors import ConfigurationError
from notefly.rendering import TemplateRenderer, build_environment, sms_segments

# GSM 03.38 basic table row by row, written out apart from the module's own copy.
GSM_BASIC_ROWS = [
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO",
    "PQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmno",
    "pqrstuvwxyzäöñüà",
]


def message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "m_1",
        "category_id": "movies",
        "body": "The new film opens tonight.",
        "accepted_at": datetime(2024, 5, 1, tzinfo=UTC),
        "title": "Premiere",
        "priority": Priority.NORMAL,
    }
    fields.update(overrides)
    return Message(**fields)


def recipient(address: str | None = "+15550100") -> Recipient:
    return Recipient(user_id="u_1", name="Ada", address=address)


@pytest.fixture
def renderer() -> TemplateRenderer:
    return TemplateRenderer(build_environment())


class CountingLoader(jinja2.BaseLoader):
    """Wraps a loader and counts how often templates are looked up in it."""

    def __init__(self, inner: jinja2.BaseLoader) -> None:
        self.inner = inner
        self.calls = 0

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        self.calls += 1
        return self.inner.get_source(environment, template)


# sms_segments


@pytest.mark.parametrize(
    ("length", "segments"),
    [(160, 1), (161, 2), (153 * 2, 2), (153 * 2 + 1, 3)],
)
def test_gsm7_segment_boundaries(length: int, segments: int) -> None:
    cost = sms_segments("a" * length)
    assert (cost.encoding, cost.segments, cost.characters) == ("GSM-7", segments, length)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(70, 1), (71, 2), (67 * 2, 2), (67 * 2 + 1, 3)],
)
def test_ucs2_segment_boundaries(length: int, segments: int) -> None:
    cost = sms_segments("ж" * length)
    assert (cost.encoding, cost.segments, cost.characters) == ("UCS-2", segments, length)


@pytest.mark.parametrize(("count", "segments"), [(80, 1), (81, 2)])
def test_extension_characters_count_two_septets(count: int, segments: int) -> None:
    cost = sms_segments("€" * count)
    assert (cost.encoding, cost.segments, cost.characters) == ("GSM-7", segments, count * 2)


def test_every_extension_character_counts_two_septets() -> None:
    cost = sms_segments("^{}\\[~]|€\f")
    assert (cost.encoding, cost.characters) == ("GSM-7", 20)


def test_basic_and_extension_characters_together_count_one_and_two_septets() -> None:
    cost = sms_segments("[Sport] 2-1 {final} ~ 5€")  # 18 basic, 6 from the extension
    assert (cost.encoding, cost.characters) == ("GSM-7", 18 + 6 * 2)


@pytest.mark.parametrize("row", GSM_BASIC_ROWS)
def test_basic_table_characters_count_one_septet(row: str) -> None:
    cost = sms_segments(row)
    assert (cost.encoding, cost.characters) == ("GSM-7", len(row))


def test_one_character_outside_gsm_makes_the_whole_text_ucs2() -> None:
    cost = sms_segments("a" * 69 + "😀")  # an emoji is two UTF-16 code units
    assert (cost.encoding, cost.segments, cost.characters) == ("UCS-2", 2, 71)


def test_empty_text_still_costs_one_segment() -> None:
    cost = sms_segments("")
    assert (cost.segments, cost.characters) == (1, 0)


# sms


def test_sms_uses_the_default_template_and_reports_its_cost(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("sms", message(), recipient())
    assert rendered.to == "+15550100"
    assert rendered.text == "[Movies] Premiere: The new film opens tonight."
    # "[" and "]" are in the GSM extension table: two septets each.
    assert rendered.meta == {"encoding": "GSM-7", "segments": 1, "characters": 48}


def test_sms_leaves_out_a_title_the_message_does_not_have(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("sms", message(title=None), recipient())
    assert rendered.text == "[Movies] The new film opens tonight."


def test_finance_uses_its_own_template_and_movies_do_not(renderer: TemplateRenderer) -> None:
    finance = message(category_id="finance", title=None, body="Up 3%", data={"symbol": "ACME"})
    assert renderer.render("sms", finance, recipient()).text == "FIN ACME: Up 3%"
    assert not renderer.render("sms", message(), recipient()).text.startswith("FIN")


def test_finance_without_a_symbol_shows_none(renderer: TemplateRenderer) -> None:
    finance = message(category_id="finance", title=None, body="Markets closed")
    assert renderer.render("sms", finance, recipient()).text == "FIN: Markets closed"


# email


def test_email_html_escapes_the_body_and_text_keeps_it(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("email", message(body="<script>alert(1)</script>"), recipient())
    assert rendered.html is not None
    assert "&lt;script&gt;" in rendered.html
    assert "<script>" not in rendered.html
    assert "<script>alert(1)</script>" in rendered.text


def test_email_greets_the_recipient_and_says_why(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("email", message(), recipient("ada@example.org"))
    assert rendered.to == "ada@example.org"
    assert rendered.text.startswith("Hello Ada,")
    assert "The new film opens tonight." in rendered.text
    assert 'subscribed to "movies"' in rendered.text
    assert rendered.html is not None
    assert "Hello Ada," in rendered.html
    assert "subscribed to &ldquo;movies&rdquo;" in rendered.html


def test_email_html_tags_are_balanced(renderer: TemplateRenderer) -> None:
    void = {"meta", "br", "img", "hr", "link", "input"}
    stack: list[str] = []

    class Checker(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag not in void:
                stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert stack.pop() == tag

    html = renderer.render("email", message(), recipient()).html
    assert html is not None
    assert html.startswith("<!DOCTYPE html>")
    Checker().feed(html)
    assert stack == []


def test_email_subject_collapses_line_breaks(renderer: TemplateRenderer) -> None:
    title = "Premiere\r\nBcc: victim@example.org\n\n  tonight"
    rendered = renderer.render("email", message(title=title), recipient())
    assert rendered.subject == "Premiere Bcc: victim@example.org tonight"


def test_email_subject_is_capped(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("email", message(title="x" * 500), recipient())
    assert rendered.subject is not None
    assert len(rendered.subject) == 200


# push


def test_push_truncates_title_and_body_to_the_limit(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("push", message(title="t" * 100, body="b" * 500), recipient())
    assert rendered.subject == "t" * 64 + "…"
    assert rendered.text == "b" * 239 + "…"
    assert rendered.meta == {"truncated": True}


def test_push_keeps_text_that_fits(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("push", message(title="t" * 65, body="b" * 240), recipient())
    assert (rendered.subject, rendered.text) == ("t" * 65, "b" * 240)
    assert rendered.meta == {"truncated": False}


def test_push_title_defaults_to_the_category(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("push", message(category_id="movie_nights", title=None), recipient())
    assert rendered.subject == "Movie Nights"


# lookup


def test_override_dir_beats_the_packaged_template(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "default.txt").write_text("Ours: {{ body }}\n", encoding="utf-8")
    renderer = TemplateRenderer(build_environment([tmp_path]))
    assert (
        renderer.render("sms", message(), recipient()).text == "Ours: The new film opens tonight."
    )
    finance = message(category_id="finance", title=None, body="Up 3%")
    assert renderer.render("sms", finance, recipient()).text == "FIN: Up 3%"


def test_templates_keep_jinja2_default_globals(tmp_path: Path) -> None:
    # A template's globals are a copy of the environment's taken when it loads.
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "default.txt").write_text(
        "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }} {{ cycler('a', 'b').next() }}",
        encoding="utf-8",
    )
    renderer = TemplateRenderer(build_environment([tmp_path]))
    assert renderer.render("sms", message(), recipient()).text == "3 a"


def test_sms_cost_is_each_recipients_own_text(tmp_path: Path) -> None:
    # The cost is kept per text: recipients whose text differs get their own.
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "default.txt").write_text("Hi {{ name }}: {{ body }}", encoding="utf-8")
    renderer = TemplateRenderer(build_environment([tmp_path]))
    ada = renderer.render("sms", message(), Recipient("u_1", "Ada", "+15550100"))
    zoe = renderer.render("sms", message(), Recipient("u_2", "Zoë ✓", "+15550101"))
    ada_again = renderer.render("sms", message(), Recipient("u_3", "Ada", "+15550102"))
    assert ada.meta == {"encoding": "GSM-7", "segments": 1, "characters": 35}
    assert zoe.meta == {"encoding": "UCS-2", "segments": 1, "characters": 37}
    assert ada_again.meta == ada.meta and ada_again.meta is not ada.meta


def test_included_templates_are_read_once_per_process(tmp_path: Path) -> None:
    # An email body renders per recipient and extends its layout each time: the
    # layout is loaded once, not looked up on disk again at every render.
    (tmp_path / "email").mkdir()
    layout = tmp_path / "email" / "_layout.html"
    layout.write_text("<p>{% block content %}{% endblock %}</p>", encoding="utf-8")
    (tmp_path / "email" / "default.html").write_text(
        '{% extends "email/_layout.html" %}{% block content %}Hi {{ name }}{% endblock %}',
        encoding="utf-8",
    )
    renderer = TemplateRenderer(build_environment([tmp_path]))
    assert renderer.render("email", message(), recipient("a@example.org")).html == "<p>Hi Ada</p>"
    layout.write_text("<div>{% block content %}{% endblock %}</div>", encoding="utf-8")
    again = renderer.render("email", message(id="m_2"), recipient("a@example.org"))
    assert again.html == "<p>Hi Ada</p>"


def test_unknown_channel_falls_back_to_generic(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("webhook", message(), recipient("https://hooks.example.org/x"))
    assert rendered.channel == "webhook"
    assert rendered.to == "https://hooks.example.org/x"
    assert (rendered.subject, rendered.text) == ("Premiere", "The new film opens tonight.")


def test_missing_address_renders_an_empty_recipient(renderer: TemplateRenderer) -> None:
    assert renderer.render("webhook", message(), recipient(None)).to == ""


def test_missing_template_for_an_unknown_part_names_it(renderer: TemplateRenderer) -> None:
    with pytest.raises(ConfigurationError, match=r"sms/default\.mjml"):
        renderer.template("sms", "movies", "mjml")


def test_missing_required_template_fails_render_and_validation() -> None:
    env = SandboxedEnvironment(
        loader=jinja2.DictLoader(
            {"email/default.subject.txt": "{{ title }}", "email/default.txt": "{{ body }}"}
        )
    )
    renderer = TemplateRenderer(env)
    with pytest.raises(ConfigurationError, match=r"email/default\.html"):
        renderer.render("email", message(), recipient())
    with pytest.raises(ConfigurationError, match=r"email/default\.html"):
        renderer.validate(["email"])


def test_packaged_templates_cover_every_channel(renderer: TemplateRenderer) -> None:
    renderer.validate(["sms", "email", "push", "webhook"])


def test_broken_override_template_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "push").mkdir()
    (tmp_path / "push" / "default.body.txt").write_text("ok\n{{ body", encoding="utf-8")
    renderer = TemplateRenderer(build_environment([tmp_path]))
    with pytest.raises(ConfigurationError, match=r"push/default\.body\.txt.*line 2"):
        renderer.render("push", message(), recipient())


def test_templates_cannot_reach_python_internals(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    body = "{{ message.__class__.__mro__[1].__subclasses__() }}"
    (tmp_path / "sms" / "default.txt").write_text(body, encoding="utf-8")
    renderer = TemplateRenderer(build_environment([tmp_path]))
    with pytest.raises(jinja2.exceptions.SecurityError):
        renderer.render("sms", message(), recipient())


def test_second_render_does_not_search_the_loader_again() -> None:
    env = build_environment()
    assert env.loader is not None
    counting = CountingLoader(env.loader)
    env.loader = counting
    renderer = TemplateRenderer(env)
    for channel in ("sms", "email", "push", "webhook"):
        renderer.render(channel, message(), recipient())
    first = counting.calls
    for channel in ("sms", "email", "push", "webhook"):
        renderer.render(channel, message(body="Another body"), recipient())
    assert first > 0
    assert counting.calls == first
