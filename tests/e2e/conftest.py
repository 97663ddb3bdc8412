"""Real Notefly processes on loopback, on ephemeral ports, driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class NoteflyProcess:
    """One `notefly` process; stop() sends SIGTERM and returns the exit code."""

    args: list[str]
    data_dir: Path
    log_path: Path
    urls: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "NOTEFLY_LOG_FORMAT": "json", **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "notefly", *self.args, "--data-dir", str(self.data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: kill() takes the workers too
            )
        deadline = time.monotonic() + timeout
        for url in self.urls.values():
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"notefly exited early:\n{self.log()}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"notefly did not become healthy:\n{self.log()}")
                time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"notefly ignored SIGTERM for {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL the process and its workers at once: a crash, not a shutdown."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@pytest.fixture
def notefly_up(tmp_path: Path) -> Iterator[NoteflyProcess]:
    broker, client = free_port(), free_port()
    process = NoteflyProcess(
        args=["up", "--broker-port", str(broker), "--client-port", str(client)],
        data_dir=tmp_path / "data",
        log_path=tmp_path / "notefly.log",
        urls={"broker": f"http://127.0.0.1:{broker}", "client": f"http://127.0.0.1:{client}"},
    )
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.kill()
