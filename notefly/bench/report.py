"""Checks against targets, and the report: a table for people, JSON for tools.

A check that could not be measured is a FAIL with the reason, never a number made up.
Rows without a target are information (``info``): they explain the checks.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PASS, FAIL, INFO = "PASS", "FAIL", "info"

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True, slots=True)
class Target:
    """What a measured value must satisfy, e.g. ``Target(">=", 0.75, "x")``."""

    op: str
    threshold: float
    unit: str = ""

    def __post_init__(self) -> None:
        if self.op not in _COMPARISONS:
            raise ValueError(f"unknown comparison {self.op!r}")

    def met_by(self, value: float) -> bool:
        return _COMPARISONS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {_number(self.threshold)}{_unit(self.unit)}"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the report.

    Attributes:
        scenario: e.g. ``"1 ingest"``.
        measure: what was measured, e.g. ``"POST /pub rate vs bare Quart"``.
        value: the number judged against ``target``; None when it was not measured.
        unit: the unit of ``value``.
        target: None for an information row.
        detail: the numbers behind ``value`` (the two rates of a ratio...).
        reason: why nothing was measured, when ``value`` is None.
    """

    scenario: str
    measure: str
    value: float | None
    unit: str = ""
    target: Target | None = None
    detail: str = ""
    reason: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return INFO
        if self.value is None:
            return FAIL
        return PASS if self.target.met_by(self.value) else FAIL

    @property
    def result(self) -> str:
        if self.value is None:
            if self.target is None and not self.reason:  # information in words
                return self.detail
            return f"not measured: {self.reason}" if self.reason else "not measured"
        text = f"{_number(self.value)}{_unit(self.unit)}"
        return f"{text} ({self.detail})" if self.detail else text

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "measure": self.measure,
            "value": self.value,
            "unit": self.unit,
            "target": str(self.target) if self.target else None,
            "verdict": self.verdict,
            "detail": self.detail,
            "reason": self.reason,
        }


def not_measured(scenario: str, measure: str, reason: str, target: Target) -> Row:
    return Row(scenario, measure, None, target=target, reason=reason)


@dataclass
class Report:
    """Everything one ``notefly bench`` run found."""

    title: str
    machine: Mapping[str, Any]
    settings: Mapping[str, Any]
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # per scenario, for the JSON

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == FAIL]

    def table(self) -> str:
        return render_table(self.rows)

    def text(self) -> str:
        head = [self.title]
        head += [f"  {key}: {value}" for key, value in self.machine.items()]
        head += [f"  {key}: {value}" for key, value in self.settings.items()]
        checks = [r for r in self.rows if r.verdict != INFO]
        passed = sum(r.verdict == PASS for r in checks)
        tail = f"{passed} of {len(checks)} targets met"
        return "\n".join([*head, "", self.table(), "", tail])

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "machine": dict(self.machine),
            "settings": dict(self.settings),
            "checks": [r.to_json() for r in self.rows],
            "scenarios": self.raw,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")


COLUMNS = ("scenario", "measure", "result", "target", "verdict")


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable as plain text too) of the rows, in order."""
    cells = [
        (r.scenario, r.measure, r.result, str(r.target) if r.target else "", r.verdict)
        for r in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(COLUMNS)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(COLUMNS), rule, *(line(c) for c in cells)])


def _number(value: float) -> str:
    magnitude = abs(value)
    if value == int(value) and (magnitude >= 1 or value == 0):
        return f"{value:,.0f}"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _unit(unit: str) -> str:
    if not unit:
        return ""
    return unit if unit in ("x", "%") else f" {unit}"


def number(value: float) -> str:
    """A number as the report writes it (thousands separated, 2-3 significant digits)."""
    return _number(value)
