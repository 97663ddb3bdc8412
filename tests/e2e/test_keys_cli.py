"""`notefly keys`: one VAPID key pair per data dir, kept across calls."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path


def keys(data_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "notefly", "keys", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_keys_are_created_once_and_kept(tmp_path: Path):
    first = keys(tmp_path)
    assert len(first) == 87  # an uncompressed P-256 point, base64url without padding
    assert keys(tmp_path) == first  # a new pair would orphan every browser subscription
    (pem,) = tmp_path.glob("*.pem")
    assert stat.S_IMODE(pem.stat().st_mode) & 0o077 == 0, "the private key is private"
