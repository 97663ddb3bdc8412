"""Closed-loop HTTP load with wrk: N connections, each sending its next request as
soon as the last one is answered. The result comes back as one JSON line printed by
a Lua ``done`` hook, with wrk's own latency percentiles (microseconds)."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "WRK_RESULT "

_SCRIPT = """\
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%.0f,"duration_us":%%.0f,"connect_errors":%%.0f,' ..
    '"read_errors":%%.0f,"write_errors":%%.0f,"status_errors":%%.0f,"timeouts":%%.0f,' ..
    '"p50_us":%%.0f,"p90_us":%%.0f,"p99_us":%%.0f,"max_us":%%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


def find_wrk() -> str | None:
    return shutil.which("wrk")


def lua_script(body: str) -> str:
    """The wrk script that POSTs ``body`` as JSON and prints the result as JSON."""
    return _SCRIPT % {"body": _lua_string(body), "mark": MARK}


def _lua_string(text: str) -> str:
    # A Lua long bracket needs no escaping as long as it does not close itself.
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # answered, whatever the status
    seconds: float
    errors: int  # connection errors and timeouts
    bad_status: int  # answers that were not 2xx/3xx
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.bad_status

    @property
    def rate(self) -> float:
        """Successful answers per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "errors": self.errors,
            "bad_status": self.bad_status,
            "rate": self.rate,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


def parse_output(stdout: str) -> WrkResult:
    """The result line among wrk's output.

    Raises:
        WrkError: there is none.
    """
    for line in stdout.splitlines():
        if line.startswith(MARK):
            raw = json.loads(line[len(MARK) :])
            return WrkResult(
                requests=int(raw["requests"]),
                seconds=raw["duration_us"] / 1e6,
                errors=int(
                    raw["connect_errors"]
                    + raw["read_errors"]
                    + raw["write_errors"]
                    + raw["timeouts"]
                ),
                bad_status=int(raw["status_errors"]),
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise WrkError(f"wrk printed no result:\n{stdout[-2000:]}")


async def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> WrkResult:
    """Run wrk for ``seconds`` (it stops by itself; killed if it overruns by 30 s)."""
    proc = await asyncio.create_subprocess_exec(
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WrkError(f"wrk did not stop within {seconds + 30:.0f} s") from None
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}:\n{out.decode(errors='replace')}")
    return parse_output(out.decode(errors="replace"))
