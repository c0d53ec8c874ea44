"""The live board in a real browser, served by uvicorn (WebSockets need ASGI): a probe
result reaches an open board without a reload."""

from __future__ import annotations

import pytest
from django.test import Client
from playwright.sync_api import expect

from tests.browser.conftest import requires_chromium
from tests.conftest import make_token

pytestmark = [requires_chromium, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_probe_result_reaches_the_open_board(page, gateway, upstream, alice, acme, make_provider):
    config = make_provider(acme, name="live-one", base_url=upstream.base_url("live", "openai"))
    upstream.configure("live", failure_rate=1.0, failure_kind="500")
    client = Client()
    client.force_login(alice)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": gateway.url}])

    page.goto(f"{gateway.url}/status/")
    expect(page.locator("#board-connection")).to_have_text("live")
    status = page.locator(f"#provider-{config.pk} .status")
    expect(status).to_have_text("unknown")

    with gateway.client(make_token(acme)) as api:
        assert api.post("/api/v1/providers/live-one/health-check/").status_code == 200
    expect(status).to_have_text("degraded")  # one failed probe, swapped in over the socket
    expect(page.locator(f"#provider-{config.pk}")).to_have_class("provider-card status-degraded")
