"""The dashboard in real headless Chromium, on a real `notefly up`, offline.

A person opens /dashboard, sees a failed delivery and the counters, publishes, watches
the throughput chart climb, and redrives the failed delivery with its button. Every
request the page makes must go to the broker on loopback: the rest is cut off.
Screenshots land in test-artifacts/.

The failed delivery is written into the store before the broker starts (see
``tests.e2e.seed``): the providers of an end-to-end run never fail, and the row is the
one a shard records when a provider gives up. The redrive then goes through the real
path: the endpoint, the store, the actors and the configured (log) provider.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e import seed
from tests.e2e.browser import offline_page
from tests.e2e.conftest import NoteflyProcess
from tests.e2e.helpers import deliveries, publish, register, subscribe, wait_delivered
from tests.integration.opsbroker import parse_metrics, sample

pytestmark = pytest.mark.e2e


def scrape(broker: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = broker.get("/metrics")
    assert response.status_code == 200
    return parse_metrics(response.text)


def test_dashboard_updates_live_and_redrives_a_failed_delivery(
    notefly_up: NoteflyProcess, tmp_path: Path
):
    # `notefly up` runs a worker per core: they share their metrics through a directory,
    # so that the dashboard and /metrics of any worker see what every worker did.
    (tmp_path / "prometheus").mkdir()
    notefly_up.env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    seeded = seed.failed_delivery(notefly_up.data_dir)
    notefly_up.start()
    urls = notefly_up.urls
    with (
        httpx.Client(base_url=urls["client"], timeout=10) as client,
        httpx.Client(base_url=urls["broker"], timeout=10) as broker,
        offline_page() as browser,
    ):
        page = browser.page
        before = scrape(broker)
        page.goto(f"{urls['broker']}/dashboard")
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("#ready")).to_have_text("ready")
        failed_row = page.locator(f'#failures tr[data-delivery-id="{seeded.delivery_id}"]')
        expect(failed_row).to_contain_text("421 relay unavailable")
        expect(page.locator('[data-counter="dead_letters"]')).to_have_text("1")
        chart = page.locator("#throughput")
        expect(chart).to_have_attribute("data-total", "0")
        browser.screenshot("dashboard-1-failed-delivery.png")

        # Publish: 3 messages to a user on SMS and email, 6 deliveries.
        dana = register(client, "dana", email="dana@example.org", phone="+14155550199")
        subscribe(client, dana, "finance", ["sms", "email"])
        sent = [
            publish(broker, "finance", f"Rates moved {n}", title=f"Rates {n}") for n in range(3)
        ]
        for message_id in sent:
            wait_delivered(broker, message_id)
        expect(chart).to_have_attribute("data-total", "6")
        expect(page.locator('#legend li:has-text("email")')).to_have_text("email: 3")
        expect(page.locator('#legend li:has-text("sms")')).to_have_text("sms: 3")
        # Drawn as bars: one, or two when the publishes straddle the edge of a 5 s bucket.
        expect(page.locator('#throughput g[data-channel="sms"] rect').first).to_be_visible()
        expect(page.locator('[data-counter="sent"]')).to_have_text("6")
        newest = page.locator(f'#messages tr[data-message-id="{sent[-1]}"]')
        expect(newest).to_contain_text("Rates 2")
        expect(newest).to_contain_text("2 sent")
        expect(page.locator('#providers tr[data-provider="email.log"]')).to_contain_text("ok")
        browser.screenshot("dashboard-2-live-throughput.png")

        # /metrics scraped around the publishes shows the counters moving.
        after = scrape(broker)
        accepted = "notefly_messages_accepted_total"
        assert (
            sample(after, accepted, category="finance")
            - sample(before, accepted, category="finance")
            == 3
        )
        for channel in ("sms", "email"):
            labels = {"channel": channel, "provider": "log", "status": "sent"}
            moved = sample(after, "notefly_deliveries_total", **labels) - sample(
                before, "notefly_deliveries_total", **labels
            )
            assert moved == 3, channel
        assert sample(after, "notefly_dead_letters_stored") == 1

        # Redrive from the button: the delivery is sent and leaves the failed list.
        failed_row.locator("button.redrive").click()
        expect(page.locator("#notice")).to_contain_text(f"{seeded.delivery_id} is queued again")
        expect(failed_row).to_have_count(0)
        expect(page.locator("#no-failures")).to_be_visible()
        expect(page.locator('[data-counter="dead_letters"]')).to_have_text("0")
        wait_delivered(broker, seeded.message_id)
        (row,) = deliveries(broker, seeded.message_id)
        assert (row["id"], row["status"], row["attempts"], row["error"]) == (
            seeded.delivery_id,
            "sent",
            1,
            None,
        )
        assert row["recipient"] == "erin@example.org"
        browser.screenshot("dashboard-3-redriven.png")
        assert sample(scrape(broker), "notefly_redrives_total", channel="email") == 1

        assert browser.blocked == []  # nothing but the broker was asked for anything
        assert browser.errors == []
    assert notefly_up.stop() == 0
