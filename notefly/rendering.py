"""Rendering: turn a message into what each channel sends, through Jinja2 templates.

A part of a channel is looked up as ``{channel}/{category}.{part}``, then as
``{channel}/default.{part}``; a channel with no templates of its own (a future
"webhook") falls back to ``generic/default.{part}``. Operators put their own templates
in override folders, which are searched before the packaged ``notefly/templates``.

Most parts read only the message. Such a part is rendered once per message and its
text reused for every recipient of that message; parts that read the recipient (a
greeting by name) are rendered per recipient. Which is which is decided once per
template, from its source and every template it extends, includes or imports.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from notefly.domain import Message, Recipient, Rendered
from notefly.errors import ConfigurationError

PACKAGE_TEMPLATES: Final = Path(__file__).resolve().parent / "templates"

GENERIC: Final = "generic"
# The template parts each channel renders; a channel missing here renders the generic ones.
CHANNEL_PARTS: Final[dict[str, tuple[str, ...]]] = {
    "sms": ("txt",),
    "email": ("subject.txt", "txt", "html"),
    "push": ("title.txt", "body.txt"),
    GENERIC: ("subject.txt", "txt"),
}

# The context keys that differ between the recipients of one message (see _context).
RECIPIENT_KEYS: Final = frozenset({"recipient", "name"})
# Messages whose recipient-independent parts are kept; a fan-out renders one message at
# a time per shard, so a few hundred covers every shard's current message with room.
MESSAGE_CACHE_SIZE: Final = 256

SUBJECT_MAX: Final = 200
# Longer push titles and bodies are cut by APNs/FCM displays anyway, and unpredictably.
PUSH_TITLE_MAX: Final = 65
PUSH_BODY_MAX: Final = 240
ELLIPSIS: Final = "…"

# GSM 03.38: the basic table (one septet each; 0x1B is the escape, not a character)
# and the extension table (escape + code: two septets each).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")
GSM7_ALL: Final = GSM7_BASIC | GSM7_EXTENSION
GSM7_SINGLE, GSM7_PART = 160, 153  # a concatenated part loses 7 septets to its header
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """What an SMS text costs.

    Attributes:
        encoding: ``"GSM-7"`` or ``"UCS-2"``.
        segments: how many SMS the text is sent as; at least 1.
        characters: septets for GSM-7, UTF-16 code units for UCS-2.
    """

    encoding: str
    segments: int
    characters: int


def sms_segments(text: str) -> SmsSegments:
    """Count the encoding, segments and characters an SMS text is billed as.

    Args:
        text: the SMS text as it will be sent.

    Returns:
        GSM-7 when every character is in the GSM 03.38 tables, otherwise UCS-2. An
        empty text is one segment of 0 characters: an empty SMS still costs one.
    """
    # Set operations over the whole text run in C: a loop over its characters took
    # most of the time an SMS took to render.
    if GSM7_BASIC.issuperset(text):
        septets = len(text)
    elif GSM7_ALL.issuperset(text):
        septets = len(text) + sum(map(text.count, GSM7_EXTENSION))
    else:
        units = len(text.encode("utf-16-le")) // 2
        return SmsSegments("UCS-2", _segments(units, UCS2_SINGLE, UCS2_PART), units)
    return SmsSegments("GSM-7", _segments(septets, GSM7_SINGLE, GSM7_PART), septets)


def _segments(length: int, single: int, part: int) -> int:
    return 1 if length <= single else math.ceil(length / part)


def build_environment(override_dirs: Sequence[Path] = ()) -> jinja2.Environment:
    """Build the sandboxed Jinja2 environment the renderer uses.

    Args:
        override_dirs: folders searched, in order, before the packaged templates.

    Returns:
        An ``ImmutableSandboxedEnvironment``, since publisher-supplied data reaches the
        templates (immutable: a template cannot change the message that later renders,
        and other recipients, share), that autoescapes ``.html`` templates only. Template
        files are read once: a change to them takes effect at the next start.
    """
    return _Environment(
        loader=jinja2.FileSystemLoader([*override_dirs, PACKAGE_TEMPLATES]),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False, default=False),
        # Chainable so templates may test optional fields: {% if data.quote.symbol %}.
        undefined=jinja2.ChainableUndefined,
        # A None in publisher data would otherwise reach the recipient as "None".
        finalize=_blank_none,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # Resolved templates are kept for the life of the process (TemplateRenderer), so
        # the ones they extend or include are too: without this, every render of an
        # email stats its layout file to see whether it changed (about a tenth of a
        # fan-out's CPU time, spent in os.stat).
        auto_reload=False,
        # A plain dict as the template cache (-1: never evicted; the templates are the
        # files on disk, a bounded set). Jinja2's default LRU cache takes a lock on
        # every lookup, and an email's render looks up its layout: with a dozen shard
        # threads rendering, threads kept blocking on that lock and on each other.
        cache_size=-1,
    )


class _Environment(ImmutableSandboxedEnvironment):
    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as a plain dict, not Jinja2's ``ChainMap`` over the
        environment's: every render copies them into its context, twice (the context's
        variables and its set of global names), and iterating a ``ChainMap`` cost about
        a third of an email's render. The copy is taken when a template loads: a global
        added to the environment later reaches only templates loaded after it (Notefly
        adds none; its templates see Jinja2's default globals)."""
        return {**self.globals, **(d or {})}


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


# An SMS text's cost, by text: a text shared by a message's recipients is counted once.
_sms_cost = functools.lru_cache(maxsize=256)(sms_segments)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one channel renders one category: its parts and their templates, the parts
    rendered once per message (``shared``), and those templates (the cache's version)."""

    templates: tuple[tuple[str, jinja2.Template], ...]
    shared: frozenset[str]
    version: tuple[jinja2.Template, ...]


class TemplateRenderer:
    """Renders messages for a channel and a recipient.

    Templates are resolved once per (channel, category, part) and kept, so a render
    never searches the loader again.
    """

    def __init__(
        self, env: jinja2.Environment, *, message_cache_size: int = MESSAGE_CACHE_SIZE
    ) -> None:
        self._env = env
        # Filled without a lock: two threads racing on a key resolve the same template.
        self._templates: dict[tuple[str, str, str], jinja2.Template] = {}
        # Templates whose output cannot depend on the recipient, decided when resolved.
        self._shared: set[jinja2.Template] = set()
        self._plans: dict[tuple[str, str], _Plan] = {}  # by (channel, category)
        self._messages = _MessageParts(message_cache_size)

    def template(self, channel: str, category_id: str, part: str) -> jinja2.Template:
        """The template used for one part of a channel and a category.

        Raises:
            ConfigurationError: no template exists for the part, or it does not compile.
        """
        key = (channel, category_id, part)
        found = self._templates.get(key)
        if found is None:
            resolved = self._resolve(channel, category_id, part)
            if not _reads_recipient(self._env, resolved):
                self._shared.add(resolved)
            # Shard threads may resolve one key at once: the first one kept is the one
            # every thread uses, so the message cache sees a single template version.
            found = self._templates.setdefault(key, resolved)
        return found

    def is_per_recipient(self, template: jinja2.Template) -> bool:
        """Whether a template resolved by this renderer may read the recipient."""
        return template not in self._shared

    def validate(self, channels: Iterable[str]) -> None:
        """Resolve every part of these channels now, so a missing template fails start-up.

        Raises:
            ConfigurationError: a channel lacks a default template or one does not compile.
        """
        for channel in channels:
            for part in _parts(channel):
                self.template(channel, "default", part)

    def render(self, channel: str, message: Message, recipient: Recipient) -> Rendered:
        """Render a message for one recipient on one channel.

        Raises:
            ConfigurationError: a template the channel needs is missing.
        """
        plan = self._plan(channel, message.category_id)
        context = None
        out: dict[str, str] = {}
        if plan.shared:
            key = (channel, message.id)
            found = self._messages.get(key, message, plan.version)
            if found is None:
                # A part that raises is not kept: each of its deliveries fails on its own.
                context = _context(message, recipient)
                found = {
                    part: template.render(context).strip()
                    for part, template in plan.templates
                    if part in plan.shared
                }
                self._messages.put(key, message, plan.version, found)
            out.update(found)
        for part, template in plan.templates:
            if part not in out:
                if context is None:  # only parts that read the recipient need one
                    context = _context(message, recipient)
                out[part] = template.render(context).strip()
        return self._finish(channel, out, recipient, message.category_id)

    def _plan(self, channel: str, category_id: str) -> _Plan:
        """The templates of a channel and a category, resolved once and kept."""
        plan = self._plans.get((channel, category_id))
        if plan is None:
            templates = tuple(
                (part, self.template(channel, category_id, part)) for part in _parts(channel)
            )
            shared = [(p, t) for p, t in templates if t in self._shared]
            # The templates are part of what the cache compares: a new one renders anew.
            made = _Plan(templates, frozenset(p for p, _ in shared), tuple(t for _, t in shared))
            plan = self._plans.setdefault((channel, category_id), made)
        return plan

    def render_digest(
        self, channel: str, items: Sequence[Message], recipient: Recipient
    ) -> Rendered:
        """Render one digest of ``items`` (newest first) for one recipient.

        Raises:
            ConfigurationError: a digest template the channel needs is missing.
        """
        context = _digest_context(items, recipient)
        out = {
            part: self.template(channel, DIGEST, part).render(context).strip()
            for part in _parts(channel)
        }
        return self._finish(channel, out, recipient, None)

    def _finish(
        self, channel: str, out: dict[str, str], recipient: Recipient, category: str | None
    ) -> Rendered:
        to = recipient.address or ""
        if channel == "sms":
            cost = _sms_cost(out["txt"])
            meta = {
                "encoding": cost.encoding,
                "segments": cost.segments,
                "characters": cost.characters,
            }
            return Rendered(channel=channel, to=to, text=out["txt"], meta=meta)
        if channel == "email":
            subject = _subject(out["subject.txt"])
            # What the email provider needs for the To header and the unsubscribe link.
            meta = {
                "user_id": recipient.user_id,
                "category": category,  # None for a digest: it spans categories
                "name": recipient.name,
            }
            return Rendered(channel, to, out["txt"], subject=subject, html=out["html"], meta=meta)
        if channel == "push":
            title, title_cut = _truncate(_one_line(out["title.txt"]), PUSH_TITLE_MAX)
            body, body_cut = _truncate(out["body.txt"], PUSH_BODY_MAX)
            meta = {"truncated": title_cut or body_cut}
            return Rendered(channel=channel, to=to, text=body, subject=title, meta=meta)
        return Rendered(channel, to, out["txt"], subject=_subject(out["subject.txt"]))

    def _resolve(self, channel: str, category_id: str, part: str) -> jinja2.Template:
        names = [f"{channel}/{category_id}.{part}", f"{channel}/default.{part}"]
        if channel not in CHANNEL_PARTS:
            names.append(f"{GENERIC}/default.{part}")
        try:
            return self._env.select_template(names)
        except jinja2.TemplatesNotFound as exc:
            raise ConfigurationError(
                f"missing template {names[-1]!r} (looked for {', '.join(names)})",
                details={"tried": names},
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigurationError(
                f"template {exc.name!r} line {exc.lineno}: {exc.message}",
                details={"template": exc.name, "line": exc.lineno},
            ) from exc


class _MessageParts:
    """A bounded, least-recently-used map of (channel, message id) to rendered parts.

    Shard threads render concurrently. A lookup takes no lock: each of its steps is
    one operation of the ordered dict, atomic under the GIL, and an entry evicted
    between them is still served (it was valid when found; the next lookup misses).
    With a lock, every render of a dozen shard threads took it: a thread switched out
    while holding it made the others block, and rendering cost two to three times its
    single-thread CPU. Only ``put`` (once per message and channel) holds the lock, so
    evictions stay consistent. Rendering a missing entry happens outside it, and two
    threads racing on one simply both render.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigurationError("the message render cache needs room for one message")
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[
            tuple[str, str], tuple[Message, tuple[jinja2.Template, ...], dict[str, str]]
        ] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, key: tuple[str, str], message: Message, version: tuple[jinja2.Template, ...]
    ) -> dict[str, str] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        # Not contextlib.suppress: a context manager per render costs more than the lookup.
        try:  # noqa: SIM105
            self._entries.move_to_end(key)
        except KeyError:  # evicted meanwhile: still a valid entry
            pass
        kept, kept_version, parts = entry
        # An id names one message, but compare anyway: a stale entry must never be sent.
        if kept_version != version or (kept is not message and kept != message):
            return None
        return parts

    def put(
        self,
        key: tuple[str, str],
        message: Message,
        version: tuple[jinja2.Template, ...],
        parts: dict[str, str],
    ) -> None:
        with self._lock:
            self._entries[key] = (message, version, parts)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def _reads_recipient(env: jinja2.Environment, template: jinja2.Template) -> bool:
    """Whether a template, or any template it pulls in, uses a recipient context key.

    Errs towards yes: a template name computed at render time, or a source that cannot
    be read, counts as reading the recipient.
    """
    if env.loader is None or template.name is None:
        return True
    pending, seen = [template.name], set[str]()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            source, filename, _ = env.loader.get_source(env, name)
            tree = env.parse(source, name, filename)
        except jinja2.TemplateError:
            return True
        if jinja2.meta.find_undeclared_variables(tree) & RECIPIENT_KEYS:
            return True
        for referenced in jinja2.meta.find_referenced_templates(tree):
            if referenced is None:
                return True
            pending.append(referenced)
    return False


def _parts(channel: str) -> tuple[str, ...]:
    return CHANNEL_PARTS.get(channel) or CHANNEL_PARTS[GENERIC]


def _context(message: Message, recipient: Recipient) -> dict[str, Any]:
    return {
        "message": message,
        "title": message.title or message.category_id.replace("_", " ").title(),
        "body": message.body,
        "data": message.data,
        "category": message.category_id,
        "priority": message.priority.value,
        "recipient": recipient,
        "name": recipient.name,
    }


DIGEST = "_digest"  # the digest templates: <channel>/_digest.<part> (no category id starts with _)
DIGEST_ITEMS = 10  # items listed in full; the rest are "and N more"


def _digest_context(items: Sequence[Message], recipient: Recipient) -> dict[str, Any]:
    shown = list(items[:DIGEST_ITEMS])
    groups: dict[str, list[Message]] = {}
    for item in shown:
        groups.setdefault(item.category_id, []).append(item)
    names = [_category_name(c) for c in dict.fromkeys(i.category_id for i in items)]
    count = len(items)
    return {
        "items": shown,
        "groups": [{"category": _category_name(c), "entries": msgs} for c, msgs in groups.items()],
        "count": count,
        "more": count - len(shown),
        "categories": names,
        "title": f"{count} update{'s' if count != 1 else ''} in {_and(names)}",
        "recipient": recipient,
        "name": recipient.name,
    }


def _category_name(category_id: str) -> str:
    return category_id.replace("_", " ").replace("-", " ").title()


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _one_line(text: str) -> str:
    # str.split() also splits on CR, LF and the Unicode line separators.
    return " ".join(text.split())


def _subject(text: str) -> str:
    # One line, so the subject can never smuggle a header into an email.
    return _truncate(_one_line(text), SUBJECT_MAX)[0]


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[: limit - 1] + ELLIPSIS, True
