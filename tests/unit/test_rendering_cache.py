"""The per-message render cache: parts that cannot read the recipient render once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from notefly.domain import Message, Priority, Recipient, Rendered
from notefly.errors import ConfigurationError
from notefly.rendering import CHANNEL_PARTS, TemplateRenderer, _MessageParts, build_environment

RECIPIENTS = [
    Recipient(user_id=f"u_{n}", name=name, address=f"{name.lower()}@example.org")
    for n, name in enumerate(["Ada", "Grace", "", "Émile <b>"])
]


def message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "m_1",
        "category_id": "finance",
        "body": "Rates rose <0.25> points & more.",
        "accepted_at": datetime(2024, 5, 1, tzinfo=UTC),
        "title": "Rates up",
        "data": {"symbol": "ACME"},
        "priority": Priority.HIGH,
    }
    fields.update(overrides)
    return Message(**fields)


class Ticks:
    """A template global that counts how often a template body is evaluated."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.count += 1
        return ""


def counted(
    templates: dict[str, str], tmp_path: Path, **kwargs: Any
) -> tuple[TemplateRenderer, Ticks]:
    """A renderer over an override dir holding these templates, with ``tick()`` counting."""
    root = tmp_path / "templates"
    for name, source in templates.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    env = build_environment([root])
    ticks = Ticks()
    env.globals["tick"] = ticks
    return TemplateRenderer(env, **kwargs), ticks


def uncached(env: jinja2.Environment, channel: str, msg: Message, who: Recipient) -> Rendered:
    # A renderer of its own per call: nothing can be reused between recipients.
    return TemplateRenderer(env).render(channel, msg, who)


def test_recipient_independent_template_renders_once_for_every_recipient(tmp_path: Path) -> None:
    renderer, ticks = counted(
        {"sms/default.txt": "{{ tick() }}[{{ category }}] {{ body }}"}, tmp_path
    )
    msg = message(category_id="movies")
    rendered = [renderer.render("sms", msg, who) for who in RECIPIENTS]
    assert ticks.count == 1
    assert [r.text for r in rendered] == ["[movies] Rates rose <0.25> points & more."] * 4
    # The address is still each recipient's own.
    assert [r.to for r in rendered] == [who.address for who in RECIPIENTS]


def test_template_reading_the_recipient_renders_for_each_one(tmp_path: Path) -> None:
    renderer, ticks = counted(
        {"sms/default.txt": "{{ tick() }}Hi {{ name }}: {{ body }}"}, tmp_path
    )
    msg = message(category_id="movies")
    texts = [renderer.render("sms", msg, who).text for who in RECIPIENTS]
    assert ticks.count == len(RECIPIENTS)
    assert texts[0] == "Hi Ada: Rates rose <0.25> points & more."
    assert texts[1] == "Hi Grace: Rates rose <0.25> points & more."


def test_recipient_object_counts_as_reading_the_recipient(tmp_path: Path) -> None:
    renderer, ticks = counted({"sms/default.txt": "{{ tick() }}{{ recipient.user_id }}"}, tmp_path)
    texts = [renderer.render("sms", message(category_id="movies"), who).text for who in RECIPIENTS]
    assert ticks.count == len(RECIPIENTS)
    assert texts == [who.user_id for who in RECIPIENTS]


def test_a_recipient_field_in_an_included_template_is_found(tmp_path: Path) -> None:
    renderer, ticks = counted(
        {
            "sms/default.txt": '{{ tick() }}{% include "sms/_greeting.txt" %} {{ body }}',
            "sms/_greeting.txt": "Dear {{ name }}",
        },
        tmp_path,
    )
    texts = [renderer.render("sms", message(category_id="movies"), who).text for who in RECIPIENTS]
    assert ticks.count == len(RECIPIENTS)
    assert texts[1].startswith("Dear Grace ")


def test_a_variable_set_in_the_template_is_not_the_recipient(tmp_path: Path) -> None:
    renderer, ticks = counted(
        {"sms/default.txt": '{{ tick() }}{% set name = "team" %}Hi {{ name }}: {{ body }}'},
        tmp_path,
    )
    texts = {renderer.render("sms", message(category_id="movies"), who).text for who in RECIPIENTS}
    assert ticks.count == 1
    assert texts == {"Hi team: Rates rose <0.25> points & more."}


def test_a_template_name_chosen_at_render_time_counts_as_per_recipient(tmp_path: Path) -> None:
    renderer, ticks = counted(
        {
            "sms/default.txt": "{{ tick() }}{% include data.part %}",
            "sms/_plain.txt": "{{ body }}",
        },
        tmp_path,
    )
    msg = message(category_id="movies", data={"part": "sms/_plain.txt"})
    texts = {renderer.render("sms", msg, who).text for who in RECIPIENTS}
    assert ticks.count == len(RECIPIENTS)
    assert texts == {"Rates rose <0.25> points & more."}


def test_packaged_email_caches_only_the_subject_and_greets_each_recipient() -> None:
    renderer = TemplateRenderer(build_environment())
    parts = {
        part: renderer.is_per_recipient(renderer.template("email", "finance", part))
        for part in CHANNEL_PARTS["email"]
    }
    # The text and the HTML layout greet the recipient by name; the subject does not.
    assert parts == {"subject.txt": False, "txt": True, "html": True}
    msg = message()
    ada, grace = (renderer.render("email", msg, who) for who in RECIPIENTS[:2])
    assert ada.text.startswith("Hello Ada,") and grace.text.startswith("Hello Grace,")
    assert "Hello Grace," in (grace.html or "") and "Hello Ada," not in (grace.html or "")
    assert (ada.meta["user_id"], ada.meta["name"]) == ("u_0", "Ada")
    assert (grace.meta["user_id"], grace.meta["name"]) == ("u_1", "Grace")
    assert ada.to == "ada@example.org" and grace.to == "grace@example.org"


@pytest.mark.parametrize("channel", ["sms", "email", "push", "webhook"])
@pytest.mark.parametrize("category", ["finance", "movies", "movie_nights"])
def test_packaged_templates_match_uncached_rendering(channel: str, category: str) -> None:
    env = build_environment()
    renderer = TemplateRenderer(env)
    messages = [
        message(category_id=category),
        message(id="m_2", category_id=category, title=None, data={}, body="x" * 300),
    ]
    for msg in messages:
        for who in RECIPIENTS:
            assert renderer.render(channel, msg, who) == uncached(env, channel, msg, who)


def test_custom_template_dir_matches_uncached_rendering(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    sources = {
        # Overrides the layout the packaged email/default.html extends: no greeting.
        "email/_layout.html": "<main>{% block content %}{% endblock %}</main>",
        "email/default.txt": "{{ body }} ({{ data.symbol }})",
        "email/finance.subject.txt": "[{{ data.symbol }}] {{ title }} for {{ name }}",
        "sms/finance.txt": "{{ name }}: {{ body }}",
        "push/default.title.txt": "{{ title|upper }}",
    }
    for name, source in sources.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    env = build_environment([root])
    renderer = TemplateRenderer(env)
    decided = {
        (channel, part): renderer.is_per_recipient(renderer.template(channel, "finance", part))
        for channel in ("email", "sms", "push")
        for part in CHANNEL_PARTS[channel]
    }
    assert decided == {
        ("email", "subject.txt"): True,
        ("email", "txt"): False,
        ("email", "html"): False,  # the packaged page over the custom layout
        ("sms", "txt"): True,
        ("push", "title.txt"): False,
        ("push", "body.txt"): False,
    }
    msg = message()
    for channel in ("email", "sms", "push"):
        for who in RECIPIENTS:
            assert renderer.render(channel, msg, who) == uncached(env, channel, msg, who)
    html = renderer.render("email", msg, RECIPIENTS[0]).html
    assert html == (
        '<main><p style="margin:0;white-space:pre-line;">'
        "Rates rose &lt;0.25&gt; points &amp; more.</p>\n</main>"
    )


def test_another_message_with_the_same_id_is_not_served_from_the_cache(tmp_path: Path) -> None:
    renderer, ticks = counted({"sms/default.txt": "{{ tick() }}{{ body }}"}, tmp_path)
    first = renderer.render("sms", message(category_id="movies"), RECIPIENTS[0])
    second = renderer.render("sms", message(category_id="movies", body="Other"), RECIPIENTS[0])
    assert (first.text, second.text) == ("Rates rose <0.25> points & more.", "Other")
    assert ticks.count == 2


def test_the_cache_is_bounded_and_forgets_the_least_recent_message(tmp_path: Path) -> None:
    renderer, ticks = counted(
        {"sms/default.txt": "{{ tick() }}{{ body }}"}, tmp_path, message_cache_size=3
    )
    messages = [message(id=f"m_{n}", category_id="movies", body=f"b{n}") for n in range(5)]
    for msg in messages:
        renderer.render("sms", msg, RECIPIENTS[0])
    assert ticks.count == 5
    # The last three are kept: each renders nothing new.
    for msg in messages[2:]:
        assert renderer.render("sms", msg, RECIPIENTS[1]).text == msg.body
    assert ticks.count == 5
    # The first was pushed out by later ones, so it renders again.
    assert renderer.render("sms", messages[0], RECIPIENTS[1]).text == "b0"
    assert ticks.count == 6


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="room for one message"):
        TemplateRenderer(build_environment(), message_cache_size=0)


def test_a_raising_template_fails_each_delivery_and_is_not_cached(tmp_path: Path) -> None:
    renderer, ticks = counted(
        {
            "sms/default.txt": "{{ tick() }}{{ body }}",
            "sms/sports.txt": "{{ tick() }}{{ 1 // data.zero }}",
        },
        tmp_path,
    )
    poison = message(id="m_bad", category_id="sports", data={"zero": 0})
    for who in RECIPIENTS[:2]:
        with pytest.raises(ZeroDivisionError):
            renderer.render("sms", poison, who)
    assert ticks.count == 2
    # Other messages on the same channel render as before.
    assert renderer.render("sms", message(category_id="movies"), RECIPIENTS[0]).text.startswith(
        "Rates rose"
    )


def test_shard_threads_rendering_one_message_all_get_their_own_address(tmp_path: Path) -> None:
    renderer, ticks = counted({"push/default.body.txt": "{{ tick() }}{{ body }}"}, tmp_path)
    msg = message(category_id="movies")
    who = [Recipient(f"u_{n}", f"User {n}", f"tok_{n}") for n in range(200)]
    results: dict[str, Rendered] = {}

    def work(chunk: list[Recipient]) -> None:
        for recipient in chunk:
            results[recipient.user_id] = renderer.render("push", msg, recipient)

    threads = [threading.Thread(target=work, args=(who[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(results) == 200
    assert all(results[r.user_id].to == r.address for r in who)
    assert {r.text for r in results.values()} == {msg.body}
    # Threads that miss together may each render once; never once per recipient.
    assert 1 <= ticks.count <= 4


def test_a_template_cannot_change_the_message_its_recipients_share(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    (root / "sms").mkdir(parents=True)
    (root / "sms" / "default.txt").write_text("{{ data.tags.append('x') }}{{ title }}")
    renderer = TemplateRenderer(build_environment([root]))
    shared = message(category_id="weather", data={"tags": ["a"]})
    with pytest.raises(SecurityError):
        renderer.render("sms", shared, RECIPIENTS[0])
    assert shared.data == {"tags": ["a"]}


def test_threads_evicting_each_other_always_get_their_own_message(tmp_path: Path) -> None:
    # Lookups take no lock: with threads evicting each other's messages all the time,
    # every render still gets its own message's text. (An eviction between a lookup's
    # two steps is too rare to count on here; the next test makes it certain.)
    renderer, _ = counted(
        {"sms/default.txt": "{{ tick() }}{{ body }}"}, tmp_path, message_cache_size=2
    )
    messages = [message(id=f"m_{n}", category_id="movies", body=f"b{n}") for n in range(6)]
    wrong: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(600):
                msg = messages[(n + offset) % len(messages)]
                text = renderer.render("sms", msg, RECIPIENTS[n % 2]).text
                if text != msg.body:
                    wrong.append((msg.id, text))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads)
    assert (errors, wrong) == ([], [])
    assert len(renderer._messages) <= 2


def test_an_entry_evicted_right_after_its_lookup_is_still_served() -> None:
    # What another thread's put can do between a lookup's two steps, made certain.
    class EvictedOnLookup(OrderedDict[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            found = super().get(key, default)
            self.pop(key, None)
            return found

    cache = _MessageParts(2)
    msg = message()
    cache.put(("sms", msg.id), msg, (), {"txt": "kept"})
    cache._entries = EvictedOnLookup(cache._entries)
    assert cache.get(("sms", msg.id), msg, ()) == {"txt": "kept"}
    assert cache.get(("sms", msg.id), msg, ()) is None  # gone now: a miss


def test_the_template_cache_is_a_plain_dict() -> None:
    # Jinja2's LRU cache locks every lookup (an email's render looks up its layout);
    # a dict needs no lock, and the templates on disk are a bounded set.
    assert type(build_environment().cache) is dict
