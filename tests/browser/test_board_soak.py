"""The live board under load (issue 9, "Must show" 5): ten providers, each changing once
a second for a minute, on a board open in headless Chromium. The board keeps one
socket (on the server and in the page), its DOM does not grow, it keeps ten cards,
and at the end every card shows its provider's final numbers.

The change is recorded traffic, as the router records it: one usage entry per provider
per second through the usage writer, whose flush announces the batch, and the board
pushes every card whose metrics moved (console/live.py, at most once a second per
tenant). Requests, errors, error rate, latency, tokens and cost move on every card.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Page, expect

from console import live
from tests.browser.conftest import requires_chromium
from usage.entry import Entry
from usage.writer import writer as usage_writer

pytestmark = [requires_chromium, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROVIDERS = 10
SECONDS = 60

# Count every WebSocket the page opens, so a silent reconnect cannot pass unnoticed,
# and the frames they bring.
COUNT_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__frames = 0;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
      this.addEventListener('message', () => { window.__frames += 1; });
    }
  };
})();
"""
MEASURE = """() => ({
  nodes: document.getElementsByTagName('*').length,
  cards: document.querySelectorAll('.provider-card').length,
  sockets: window.__sockets.length,
  open_sockets: window.__sockets.filter((s) => s.readyState === WebSocket.OPEN).length,
})"""
TEXT_OF_HTML = """(html) => {
  const t = document.createElement('template');
  t.innerHTML = html.trim();
  return t.content.firstElementChild.textContent;
}"""


def words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class Traffic:
    """Usage entries for the providers, and what each card should then show."""

    def __init__(self, tenant, configs) -> None:
        self.tenant, self.configs = tenant, configs
        self.requests = {c.pk: 0 for c in configs}
        self.errors = {c.pk: 0 for c in configs}

    def add(self, config, second: int, ago: timedelta = timedelta(0)) -> None:
        failed = (second + config.pk) % 7 == 0
        latency = float(20 + (second * 37 + config.pk * 11) % 400)
        attempt = {"provider": config.name, "outcome": "error" if failed else "success",
                   "status_code": 500 if failed else 200, "latency_ms": latency,
                   "error": "HTTP 500: upstream failed" if failed else ""}  # fmt: skip
        usage_writer.add(
            Entry(
                self.tenant.pk, None, config.pk, config.name, [attempt], [config.pk],
                "error" if failed else "success", 500 if failed else 200,
                error_code="upstream_error" if failed else "", model=config.model, latency_ms=latency,
                prompt_tokens=0 if failed else 12, completion_tokens=0 if failed else 30 + second % 5,
                cost=Decimal("0") if failed else Decimal("0.000123"), created=timezone.now() - ago,
            )
        )  # fmt: skip
        self.requests[config.pk] += 1
        self.errors[config.pk] += int(failed)

    def flush(self) -> None:
        assert usage_writer.flush() > 0

    def expect_shown(self, board: Page) -> None:
        """Each card shows its provider's request and error counts (as pushed last)."""
        for c in self.configs:
            card = board.locator(f"#provider-{c.pk}")
            expect(card.locator(".requests")).to_have_text(str(self.requests[c.pk]))
            expect(card.locator(".errors")).to_have_text(str(self.errors[c.pk]))


def test_the_board_stays_correct_under_an_update_a_second_per_provider_for_a_minute(
    page, gateway, alice, acme, make_provider
):
    configs = [make_provider(acme, name=f"p{i:02d}", weight=5 + i) for i in range(PROVIDERS)]
    client = Client()
    client.force_login(alice)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": gateway.url}])
    page.add_init_script(COUNT_SOCKETS)
    page.goto(f"{gateway.url}/status/")
    expect(page.locator("#board-connection")).to_have_text("live")
    expect(page.locator(".provider-card")).to_have_count(PROVIDERS)
    page.evaluate("window.__marker = 1")

    # Warm-up: traffic two minutes ago and now, so every card already has what it keeps
    # showing (numbers, rates, a latency sparkline) before the first count.
    traffic = Traffic(acme, configs)
    for c in configs:
        traffic.add(c, 0, ago=timedelta(minutes=2))
        traffic.add(c, 1)
    traffic.flush()
    traffic.expect_shown(page)
    expect(page.locator(".provider-card svg.sparkline polyline")).to_have_count(PROVIDERS)
    start = page.evaluate(MEASURE)
    start_boards = live.open_boards(acme.pk)
    assert start_boards == 1
    assert start["cards"] == PROVIDERS and start["sockets"] == start["open_sockets"] == 1

    frames_before = page.evaluate("window.__frames")
    began = time.monotonic()
    for second in range(2, SECONDS + 2):
        for c in configs:
            traffic.add(c, second)
        traffic.flush()
        next_tick = began + (second - 1)  # pace the load: one change per provider per second
        time.sleep(max(0.0, next_tick - time.monotonic()))
    assert time.monotonic() - began >= SECONDS

    traffic.expect_shown(page)  # the last update is on the board
    end = page.evaluate(MEASURE)
    frames = page.evaluate("window.__frames") - frames_before
    assert frames >= PROVIDERS * SECONDS // 2, frames  # it really was under load (pushes coalesce, at most 1/s)
    assert live.open_boards(acme.pk) == start_boards
    assert end == start, (start, end)  # DOM nodes, cards and sockets: no growth
    expect(page.locator("#board-connection")).to_have_text("live")
    assert page.evaluate("window.__marker") == 1  # never reloaded

    # Each card reads as the server renders it from the stored numbers now.
    for c in configs:
        fresh = live.card_html(acme.pk, c.pk)
        shown = page.locator(f"#provider-{c.pk}").text_content()
        assert words(shown) == words(page.evaluate(TEXT_OF_HTML, fresh)), c.name
