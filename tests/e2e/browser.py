"""Headless Chromium for the end-to-end tests, with the network cut to loopback.

The browser is Debian's chromium package, driven by Playwright; no browser is ever
downloaded. Without it the tests skip, with the reason, except under CI (``CI`` set),
where they fail: a CI run must not pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, sync_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str:
    found = (
        os.environ.get("NOTEFLY_TEST_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if found:
        return found
    reason = "no chromium on PATH: install Debian's chromium package (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Offline:
    """A page whose requests may only go to loopback; the others are aborted and kept."""

    page: Page
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def offline_page() -> Iterator[Offline]:
    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            offline = Offline(page)

            def route(route: Route) -> None:
                url = route.request.url
                parts = urlsplit(url)
                if parts.scheme in ("data", "blob") or parts.hostname in LOOPBACK:
                    route.continue_()
                else:
                    offline.blocked.append(url)
                    route.abort("internetdisconnected")

            context.route("**/*", route)
            page.on("pageerror", lambda error: offline.errors.append(str(error)))
            page.set_default_timeout(15_000)
            yield offline
        finally:
            browser.close()
