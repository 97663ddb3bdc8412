"""The processes a benchmark runs: Notefly and the reference app, and what they use.

Every server listens on 127.0.0.1 on a port the kernel chose, runs in its own process
group (so that stopping it takes its workers too), and is stopped by the benchmark
that started it. Memory and threads are read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from notefly.threads import stat_cpu_seconds

PROC = Path("/proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class ProcessUse:
    """What one process uses: resident memory now and at its peak, and live threads."""

    pid: int
    rss_kib: int
    peak_rss_kib: int
    threads: int


def parse_status(pid: int, text: str) -> ProcessUse:
    """Read ``/proc/<pid>/status`` text (``VmRSS``, ``VmHWM`` in kB, ``Threads``).

    Raises:
        ValueError: a field is missing (a zombie has no memory lines).
    """
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads"):
            fields[name] = int(value.split()[0])
    missing = {"VmRSS", "VmHWM", "Threads"} - fields.keys()
    if missing:
        raise ValueError(f"process {pid} has no {', '.join(sorted(missing))}")
    return ProcessUse(pid, fields["VmRSS"], fields["VmHWM"], fields["Threads"])


def process_use(pid: int) -> ProcessUse | None:
    """What ``pid`` uses now, or None when it is gone."""
    try:
        return parse_status(pid, (PROC / str(pid) / "status").read_text())
    except (OSError, ValueError):
        return None


def parent_of(stat: str) -> int:
    """The parent pid in ``/proc/<pid>/stat`` text (after the parenthesised name)."""
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def tree_cpu_seconds(root: int) -> float:
    """CPU time used so far by ``root`` and its live descendants: what a run cost,
    however busy the machine was (the wall clock is not)."""
    total = 0.0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += stat_cpu_seconds((PROC / str(pid) / "stat").read_text())
    return total


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive, parents first."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = parent_of((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return tree


@dataclass
class UseSampler:
    """Samples the process tree of ``root`` now and then; keeps the peaks per process."""

    root: int
    interval: float = 0.5
    peaks: dict[int, ProcessUse] = field(default_factory=dict)
    samples: int = 0

    def sample(self) -> None:
        for pid in process_tree(self.root):
            use = process_use(pid)
            if use is None:
                continue
            seen = self.peaks.get(pid)
            if seen is None:
                self.peaks[pid] = use
            else:
                self.peaks[pid] = ProcessUse(
                    pid,
                    max(seen.rss_kib, use.rss_kib),
                    max(seen.peak_rss_kib, use.peak_rss_kib),
                    max(seen.threads, use.threads),
                )
        self.samples += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        await asyncio.to_thread(self.sample)  # the peaks (VmHWM) as the run ends

    def max_peak_rss_kib(self) -> int:
        return max((u.peak_rss_kib for u in self.peaks.values()), default=0)

    def max_threads(self) -> int:
        return max((u.threads for u in self.peaks.values()), default=0)


class ServerError(RuntimeError):
    """A server under test did not start, or died; carries the end of its log."""


@dataclass
class Server:
    """One server process group under test, with its log in a file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env),
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise ServerError(f"{self.name} exited:\n{self.log_tail()}")

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM the group, then SIGKILL it after ``grace`` seconds; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Workers left behind by a supervisor that died first.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def notefly_server(
    data_dir: Path, workers: int, env: Mapping[str, str], log_path: Path
) -> tuple[Server, str]:
    """``notefly up`` on free ports with ``workers`` nodes; the server and broker URL."""
    broker, client = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "notefly",
        "up",
        "--host",
        "127.0.0.1",
        "--broker-port",
        str(broker),
        "--client-port",
        str(client),
        "--data-dir",
        str(data_dir),
        "--workers",
        str(workers),
    ]
    return Server("notefly", argv, log_path, env), f"http://127.0.0.1:{broker}"


def bare_server(
    workers: int, env: Mapping[str, str], log_path: Path, *, uvloop: bool = False
) -> tuple[Server, str]:
    """The bare Quart reference app under hypercorn with ``workers`` processes."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "hypercorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "uvloop" if uvloop else "asyncio",
        "notefly.bench.bare_app:create_app()",
    ]
    return Server("bare Quart", argv, log_path, env), f"http://127.0.0.1:{port}"
