"""``notefly up --workers N``: N broker+client processes on one machine.

One Python process is bound to one core by the GIL, so a machine with several cores
runs several nodes. Each worker is a whole node: it serves both HTTP services on the
shared ports (SO_REUSEPORT spreads connections between workers) and takes part in
sharing work through the store exactly as nodes on different machines do. This parent
only starts them, restarts one that dies, and passes SIGTERM/SIGINT on.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

import structlog

log = structlog.get_logger("notefly.supervisor")

PR_SET_PDEATHSIG = 1
RESTART_DELAY_SECONDS = 1.0


def _die_with_parent() -> None:
    # A worker must not outlive its supervisor, even one killed with SIGKILL: it gets
    # SIGTERM then and stops cleanly, handing its work back to the store.
    with contextlib.suppress(OSError):  # not Linux: a worker outlives a killed parent
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(child_args: Sequence[str], workers: int, *, grace: float = 15.0) -> int:
    """Run ``notefly <child_args> --worker-index i`` for each worker until told to stop."""
    stopping = False

    def spawn(index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "notefly", *child_args, "--worker-index", str(index)],
            preexec_fn=_die_with_parent,
        )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    procs = {i: spawn(i) for i in range(workers)}
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("workers.started", workers=workers, pids=[p.pid for p in procs.values()])
    deadline: float | None = None
    while True:
        time.sleep(0.1)
        for index, proc in list(procs.items()):
            code = proc.poll()
            if code is None or stopping:
                continue
            log.error("worker.exited", worker=index, code=code, restart_in=RESTART_DELAY_SECONDS)
            time.sleep(RESTART_DELAY_SECONDS)
            if not stopping:
                procs[index] = spawn(index)
        if stopping:
            deadline = deadline or time.monotonic() + grace
            if all(p.poll() is not None for p in procs.values()):
                break
            if time.monotonic() > deadline:
                for proc in procs.values():
                    proc.kill()
                break
    codes = [p.wait() for p in procs.values()]
    log.info("workers.stopped", codes=codes)
    return max(codes, default=0)
