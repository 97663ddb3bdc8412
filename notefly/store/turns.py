"""Turns at the write lock for the processes that share one SQLite file.

SQLite's write lock is taken by trying again and again (``begin_immediate``). Under
steady load from two processes the one that waits can keep missing it: the other
lets go and takes it back between two of its tries. Under wrk, with every
transaction holding the lock for at most 18 ms, waits reached 66-142 ms.

``WriteTurns`` queues the processes in the kernel instead: each takes an ``flock`` on
a file beside the database before ``BEGIN IMMEDIATE`` and lets go after its commit.
A process that waits for it is woken the moment the holder lets go, well before the
holder comes back for its next transaction. It only orders the writers: the
transaction still begins with ``BEGIN IMMEDIATE``, so a program that knows nothing
of the turns (the ``sqlite3`` shell) stays safe, and the lock of a process that dies
goes with it.

``flock`` has no timeout, so a wait that may be long happens on a helper thread of
this object, and the writer gives up after its own timeout. A turn given up is
handed back as soon as the helper gets it.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
from pathlib import Path


class _Ask:
    __slots__ = ("answered", "given_up", "taken")

    def __init__(self) -> None:
        self.answered = threading.Lock()
        self.answered.acquire()  # released by the helper once the turn is taken
        self.taken = False
        self.given_up = False


class WriteTurns:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._asks: queue.SimpleQueue[_Ask | None] = queue.SimpleQueue()
        self._state = threading.Lock()  # guards taken/given_up and closing
        self._helper: threading.Thread | None = None
        self._waiting = False  # the helper has an ask: it closes the file if need be
        self._closed = False

    def take(self, timeout: float) -> bool:
        """Wait for this process's turn, at most ``timeout`` seconds. True: it is ours
        until ``give_back``; False: not within the time (go on without it)."""
        if self._closed:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        ask = _Ask()
        with self._state:
            if self._closed:
                return False
            self._waiting = True
            if self._helper is None:
                self._helper = threading.Thread(
                    target=self._wait_for_turns, name="sqlite-write-turns", daemon=True
                )
                self._helper.start()
            self._asks.put(ask)
        if ask.answered.acquire(timeout=max(timeout, 0.0)):
            return True
        with self._state:
            if ask.taken:  # taken just as the wait ended
                return True
            ask.given_up = True
            return False

    def give_back(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file; a helper still waiting in ``flock`` closes it when done."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            self._asks.put(None)
            if self._waiting:
                return
        os.close(self._fd)

    def _wait_for_turns(self) -> None:
        while (ask := self._asks.get()) is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._state:
                if self._closed:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    return
                if ask.given_up:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                else:
                    ask.taken = True
                    ask.answered.release()
                self._waiting = not self._asks.empty()
