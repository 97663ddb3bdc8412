"""The messages actors tell each other. Small immutable values, nothing else."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Any

from notefly.domain import DeliveryTask, Message
from notefly.ports import Segment


@dataclass(frozen=True, slots=True)
class Fanout:
    message: Message
    cursor: str | None = None  # resume after this user id (recovery, or after a first page)
    handed: int = 0  # deliveries of the message handed on before this fan-out began
    segment: Segment | None = None  # the range of the audience it covers; None: all
    may_split: bool = True  # whether to try splitting before the next page


@dataclass(frozen=True, slots=True)
class SplitDone:
    fanout: Fanout
    result: concurrent.futures.Future[Any]


@dataclass(frozen=True, slots=True)
class Wake:
    """A category actor with pages waiting for room may look for room again."""


@dataclass(frozen=True, slots=True)
class PageDone:
    fanout: Fanout
    result: concurrent.futures.Future[Any]


@dataclass(frozen=True, slots=True)
class Deliver:
    tasks: tuple[DeliveryTask, ...]


@dataclass(frozen=True, slots=True)
class RoundDone:
    tasks: tuple[DeliveryTask, ...]
    result: concurrent.futures.Future[Any]


@dataclass(frozen=True, slots=True)
class Resume:
    """A waiting entity may try its head delivery again."""

    user_id: str
