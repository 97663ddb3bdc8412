"""``notefly bench``: the benchmark suite of the real services on loopback.

Every scenario measures its reference in the same run (a bare Quart app, the plain
single-threaded loop) and is judged by the ratio, so results hold on a noisy machine.
Benchmarks print numbers; they are not timed tests. See ``notefly bench --help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``notefly bench``."""
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes for development (100k instead of 1M)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated: ingest, latency, fanout, scale, digest, nodes (1 to 3 broker"
        " nodes on a PostgreSQL database of their own, made on NOTEFLY_BENCH_POSTGRES_URL,"
        " by default the local server as user postgres; part of the full run too)",
    )
    parser.add_argument(
        "--workers", type=int, help="Notefly and reference workers (the number of cores)"
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="also measure ingest under uvloop (if installed)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases and logs of the run"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")


def command(args: argparse.Namespace) -> int:
    # Imported here: the scenarios are not needed to build the CLI's parser.
    from notefly.bench.runner import command as run

    return run(args)
