"""The live inbox in real headless Chromium (Debian's chromium, driven by Playwright),
on a real `notefly up`: a person registers on /sub, subscribes, publishes on the
broker's /pub in another tab, and sees the notification appear on /sub without
reloading. Then SIGTERM still stops the process promptly with the stream open."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import offline_page
from tests.e2e.conftest import NoteflyProcess

pytestmark = pytest.mark.e2e


def test_a_published_notification_appears_live_on_the_sub_page(notefly_up: NoteflyProcess):
    notefly_up.start()
    client, broker = notefly_up.urls["client"], notefly_up.urls["broker"]
    with offline_page() as offline:
        page = offline.page
        page.goto(f"{client}/sub")
        page.fill("#name", "Dana")
        page.fill("#email", "dana@example.org")
        page.click("#register-form button[type=submit]")
        expect(page.locator("h1")).to_contain_text("Dana")
        page.check("#sub-finance-email")
        page.click("#subscriptions-form button[type=submit]")
        expect(page.locator("#saved")).to_be_visible()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
        expect(page.locator("#notifications")).to_contain_text("Nothing yet.")
        page.evaluate("window.notReloaded = true")

        publisher = page.context.new_page()
        publisher.goto(f"{broker}/pub")
        publisher.select_option("#category", "finance")
        publisher.fill("#title", "Live rates")
        publisher.fill("#body", "The key rate rose <b>0.25</b> points.")
        publisher.click("form button[type=submit]")
        expect(publisher.locator("#message-id")).to_be_visible()

        item = page.locator("#notifications li.notification").first
        expect(item).to_contain_text("Live rates", timeout=15_000)
        expect(item).to_contain_text("The key rate rose <b>0.25</b> points.")  # text, not HTML
        expect(item.locator(".badge")).to_have_text("unread")
        expect(page.locator("#notifications")).not_to_contain_text("Nothing yet.")
        assert page.evaluate("window.notReloaded") is True
        assert page.locator("#notifications li.notification").count() == 1

        # The live item's button marks it read like a rendered one.
        item.locator("button").click()
        expect(page.locator("#notifications li.notification.read")).to_have_count(1)
        assert offline.errors == [] and offline.blocked == []

        page.goto(f"{client}/sub?user=" + page.url.split("user=")[1].split("&")[0])
        expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
        started = time.monotonic()
        assert notefly_up.stop() == 0  # while the browser still holds a stream open
        assert time.monotonic() - started < 10  # the graceful timeout (3 s) ends the stream
