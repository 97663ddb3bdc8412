"""``notefly status``: what a running broker is doing, read from its ``GET /status``.

Prints readiness, pending work and recent failures as a table, or the whole snapshot
as JSON with ``--json``. Exits 0 when the broker is ready, 1 when it is not ready or
cannot be reached, so that scripts can branch on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

from notefly.config import Settings

FAILURES_SHOWN = 10


class Unreachable(Exception):
    """The broker did not answer with a status."""


def fetch(base_url: str, timeout: float = 10.0, api_key: str | None = None) -> dict[str, Any]:
    url = base_url.rstrip("/") + "/status"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            found: dict[str, Any] = json.load(response)
            return found
    except urllib.error.HTTPError as exc:
        hint = (
            " (an admin key is needed: --api-key or NOTEFLY_API_KEY)"
            if exc.code in (401, 403)
            else ""
        )
        raise Unreachable(f"{url} answered {exc.code}{hint}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach the broker at {url}: {reason}") from exc
    except ValueError as exc:
        raise Unreachable(f"{url} did not answer JSON") from exc


def command(args: argparse.Namespace, settings: Settings) -> int:
    """The ``status`` subcommand of the CLI."""
    base = args.broker_url or f"http://{settings.broker_host}:{settings.broker_port}"
    api_key = args.api_key or settings.env.get("NOTEFLY_API_KEY")
    return report(base, as_json=args.json, api_key=api_key)


def report(
    base_url: str, *, as_json: bool, out: TextIO = sys.stdout, api_key: str | None = None
) -> int:
    try:
        snapshot = fetch(base_url, api_key=api_key)
    except Unreachable as exc:
        print(f"notefly: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(snapshot, indent=2), file=out)
    else:
        print(render(snapshot, base_url), file=out)
    return 0 if snapshot.get("ready") else 1


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render(s: dict[str, Any], base_url: str) -> str:
    """The snapshot as a few short tables a person reads at a glance."""
    state = "READY" if s["ready"] else "NOT READY"
    if s["ready"] and s.get("status") == "degraded":
        state = "READY (degraded)"
    lines = [f"{s['service']} {base_url}  node {s.get('node') or '-'}  v{s['version']}  {state}"]
    lines += _table([[c["name"], "ok" if c["ok"] else "FAIL", c["detail"]] for c in s["checks"]])
    work, counters, actors = s["work"], s["counters"], s.get("actors") or {}
    lines += ["", "pending work"]
    lines += _table(
        [
            ["queued in the store", str(work["queued"])],
            ["held by the actors", str(work["in_actors"])],
            ["live entities", str(actors.get("entities", 0))],
            ["failed (dead letters)", str(work["failed"])],
        ]
    )
    lines += ["", "since this process started"]
    lines += _table([[name, str(value)] for name, value in counters.items()])
    providers = s.get("providers") or []
    circuits = {(c["channel"], c["provider"]): c for c in s.get("circuits") or []}
    if providers:
        lines += ["", "providers"]
        header = [
            "channel",
            "provider",
            "state",
            "circuit",
            "sent",
            "retried",
            "failed",
            "last error",
        ]
        lines += _table(
            [header]
            + [
                [
                    p["channel"],
                    p["provider"],
                    p["state"],
                    _circuit(p.get("circuit"), circuits.get((p["channel"], p["provider"]))),
                    str(p["sent"]),
                    str(p["retried"]),
                    str(p["failed"]),
                    _short(p.get("last_error")),
                ]
                for p in providers
            ]
        )
    failures = s.get("failures") or []
    lines += ["", f"recent failures: {len(failures)}" if failures else "recent failures: none"]
    if failures:
        header = ["failed at", "delivery", "user", "channel", "attempts", "error"]
        lines += _table(
            [header]
            + [
                [
                    f["failed_at"][:19],
                    f["id"],
                    f["user"],
                    f["channel"],
                    str(f["attempts"]),
                    _short(f.get("error")),
                ]
                for f in failures[:FAILURES_SHOWN]
            ]
        )
    return "\n".join(lines)


def _circuit(state: str | None, circuit: dict[str, Any] | None) -> str:
    """The breaker's state, with when the next probe may go out while it is open."""
    state = (circuit or {}).get("state") or state or "-"
    retry_in = (circuit or {}).get("retry_in_seconds")
    return f"{state} ({retry_in:.0f}s)" if state == "open" and retry_in is not None else state


def _short(text: str | None, limit: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
