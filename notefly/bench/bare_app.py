"""The ingest reference: a bare Quart app that answers ``POST /pub`` with 202 and does
nothing else. The benchmark serves it with hypercorn's own workers
(``hypercorn --workers N notefly.bench.bare_app:create_app()``), in processes of its
own; nothing in Notefly imports this module.

Quart is imported by name because the core is framework-free (an import-linter
contract); this module is a benchmark fixture that is only ever run by hypercorn.
"""

from __future__ import annotations

import importlib
from typing import Any


async def publish() -> tuple[dict[str, str], int]:
    return {"status": "accepted"}, 202


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Any:
    quart = importlib.import_module("quart")
    app = quart.Quart("notefly-bench-bare")
    app.add_url_rule("/pub", view_func=publish, methods=["POST"])
    app.add_url_rule("/healthz", view_func=healthz, methods=["GET"])
    return app
