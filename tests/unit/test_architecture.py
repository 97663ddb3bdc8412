"""The layering rules of ARCHITECTURE.md section 1, checked on every test run."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_rules_hold():
    # notefly imports no service or provider; channels only notefly; broker and client
    # never import each other (contracts in pyproject.toml).
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_importing_every_module_builds_nothing():
    # Nothing is built at import time: no actor, no thread, no connection.
    threads_before = threading.active_count()
    for package in ("notefly", "broker", "client", "channels"):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue
            importlib.import_module(info.name)
    assert threading.active_count() == threads_before
