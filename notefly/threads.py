"""CPU time by kind of thread, for the metrics.

A broker process spends its CPU on a few kinds of threads: the event loop (the main
thread), the SQLite writer and reader connections' threads, one thread a channel shard,
the category actors. Which of them is busy says where a delivery's cost goes, in a
benchmark and in production alike; the process's total does not.

The kernel keeps each thread's CPU time (``/proc/self/task/<id>/stat`` on Linux). A
thread that ends takes its figure with it, so ``ThreadCpu`` keeps the last one it read
of every thread: the totals by kind never go back. Elsewhere there is nothing to read
and the totals stay empty.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable

# "Thread-3 (target)": a thread named after the function it runs.
_UNNAMED = re.compile(r"Thread-\d+ \((?P<target>.+)\)")
# "ChannelShard-4", "asyncio_0": a name with a counter.
_COUNTED = re.compile(r"[-_]\d+$")

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# A thread's CPU seconds by its kernel id, or None once it is gone.
CpuReader = Callable[[int], float | None]


def thread_kind(name: str) -> str:
    """The kind of a thread: its name without the counter that tells threads of one kind
    apart ("shard-email-0" and "shard-email-1" are both "shard-email")."""
    unnamed = _UNNAMED.fullmatch(name)
    if unnamed is not None:
        return unnamed["target"]
    return _COUNTED.sub("", name) or name


def stat_cpu_seconds(stat: str, ticks: int = _TICKS) -> float:
    """User plus system CPU seconds in the text of a ``/proc/.../stat`` file (of a
    process or of one of its threads)."""
    # After the name (in parentheses, which may hold anything): the state, then ten
    # fields, then utime and stime, in clock ticks.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_cpu_seconds(native_id: int) -> float | None:
    """User and system CPU seconds of this process's thread ``native_id``, from
    ``/proc``; None when there is no such thread (or no ``/proc``)."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", errors="replace") as stat:
            return stat_cpu_seconds(stat.read())
    except OSError:
        return None


def named_threads() -> list[tuple[int, str]]:
    """(kernel id, name) of this process's live Python threads."""
    return [(t.native_id, t.name) for t in threading.enumerate() if t.native_id is not None]


class ThreadCpu:
    """CPU seconds since start by kind of thread (``thread_kind``), kept across threads
    that end: each thread counts with the last figure read of it."""

    def __init__(
        self,
        read: CpuReader = proc_cpu_seconds,
        threads: Callable[[], Iterable[tuple[int, str]]] = named_threads,
    ) -> None:
        self._read = read
        self._threads = threads
        self._live: dict[int, tuple[str, float]] = {}  # kernel id -> (kind, seconds)
        self._ended: dict[str, float] = {}  # kind -> seconds of its threads that ended
        self._lock = threading.Lock()  # the sampler's thread and a scrape may both read

    def totals(self) -> dict[str, float]:
        """Seconds by kind, as of now."""
        with self._lock:
            seen: dict[int, tuple[str, float]] = {}
            for native_id, name in self._threads():
                seconds = self._read(native_id)
                if seconds is not None:
                    seen[native_id] = (thread_kind(name), seconds)
            for native_id, (kind, seconds) in self._live.items():
                now = seen.get(native_id)
                if now is None or now[1] < seconds:  # ended (its id may be a new thread's)
                    self._ended[kind] = self._ended.get(kind, 0.0) + seconds
            self._live = seen
            totals = dict(self._ended)
            for kind, seconds in seen.values():
                totals[kind] = totals.get(kind, 0.0) + seconds
            return totals
