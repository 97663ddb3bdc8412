"""The clock and the id factory, injected everywhere time or ids are needed."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SortableIds:
    """Ids that sort by creation time: ``<prefix>_<ms since epoch, hex><random hex>``.

    Sortable ids keep newest-first listings and keyset pagination cheap.
    """

    def __init__(self, clock: SystemClock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self, prefix: str) -> str:
        ms = int(self._clock.now().timestamp() * 1000)
        with self._lock:
            # A counter within the same millisecond keeps ids from one process ordered.
            if ms <= self._last_ms:
                self._counter += 1
                ms = self._last_ms
            else:
                self._counter = 0
                self._last_ms = ms
            counter = self._counter
        return f"{prefix}_{ms:011x}{counter:04x}{os.urandom(5).hex()}"


def monotonic() -> float:
    return time.monotonic()
