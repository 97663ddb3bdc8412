"""/docs of both services render in headless Chromium with the network cut off."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Offline, offline_page
from tests.e2e.conftest import NoteflyProcess

pytestmark = pytest.mark.e2e


def operations(browser: Offline) -> set[tuple[str, str]]:
    """(method, path) of every operation Swagger UI rendered."""
    blocks = browser.page.locator(".opblock")
    expect(blocks.first).to_be_visible()
    rendered = set()
    for block in blocks.all():
        method = block.locator(".opblock-summary-method").inner_text().strip()
        path = block.locator(".opblock-summary-path").inner_text().strip()
        rendered.add((method, path.replace("\u200b", "")))
    return rendered


def test_api_docs_render_offline_on_both_services(notefly_up: NoteflyProcess):
    notefly_up.start()
    with offline_page() as browser:
        # The cut is real: a request to anywhere else fails in the page.
        browser.page.goto(f"{notefly_up.urls['broker']}/docs")
        outcome = browser.page.evaluate(
            "fetch('https://example.org/').then(() => 'reached', () => 'blocked')"
        )
        assert outcome == "blocked"
        assert browser.blocked == ["https://example.org/"]
        browser.blocked.clear()

        broker_ops = operations(browser)
        assert {
            ("POST", "/pub"),
            ("GET", "/messages/{message_id}"),
            ("GET", "/status"),
            ("GET", "/readyz"),
            ("POST", "/deliveries/{delivery_id}/retry"),
        } <= broker_ops
        expect(browser.page.locator(".info .title")).to_contain_text("Notefly broker")
        browser.screenshot("docs-broker.png")

        browser.page.goto(f"{notefly_up.urls['client']}/docs")
        client_ops = operations(browser)
        assert {("POST", "/users"), ("POST", "/sub"), ("GET", "/readyz")} <= client_ops
        assert ("POST", "/pub") not in client_ops
        expect(browser.page.locator(".info .title")).to_contain_text("Notefly client")
        browser.screenshot("docs-client.png")

        assert browser.blocked == []
        assert browser.errors == []
    assert notefly_up.stop() == 0
