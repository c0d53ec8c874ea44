"""A person signs in, sees their providers and switches tenant, in a real browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import requires_chromium
from tests.factories import MembershipFactory

pytestmark = [requires_chromium, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def test_sign_in_and_switch_tenant(page, live_server, alice, acme, globex, make_provider):
    MembershipFactory(user=alice, tenant=globex, role="viewer")
    make_provider(acme, name="acme-openai")
    make_provider(globex, name="globex-anthropic", type="anthropic", model="claude-3-5-haiku-latest")

    page.goto(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "Sign in"
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Providers of Acme")
    assert page.get_by_text("acme-openai", exact=True).is_visible()
    assert page.get_by_text("globex-anthropic", exact=True).count() == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "providers.png"), full_page=True)

    page.select_option("select[name=tenant]", label="Globex")
    page.wait_for_selector("text=Providers of Globex")
    assert page.get_by_text("globex-anthropic", exact=True).is_visible()
    assert page.get_by_text("acme-openai", exact=True).count() == 0


def test_a_wrong_password_keeps_you_out(page, live_server, alice):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    page.wait_for_selector("text=didn't match")
    assert "/login/" in page.url
