"""The console and /api/docs/ work in a real browser under the strict Content-Security-Policy
(settings.CONTENT_SECURITY_POLICY): no violation is reported on any page, the board's
WebSocket goes live, htmx swaps work, and Swagger UI renders from our static files."""

from __future__ import annotations

import pytest
from django.test import Client
from playwright.sync_api import Page, expect

from tests.browser.conftest import requires_chromium
from tests.factories import MembershipFactory

pytestmark = [requires_chromium, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Each violation, as the page sees it (securitypolicyviolation events), from the first script on.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sample || ""));
});
"""


@pytest.fixture
def watched(page: Page):
    """The page, recording CSP violations and page errors; asserts none at the end."""
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: console.append(f"page error: {e}"))
    page.add_init_script(RECORD_VIOLATIONS)
    page.console_problems = console
    yield page


def no_violations(page: Page) -> None:
    assert page.evaluate("window.__violations") == []
    assert page.console_problems == []


def sign_in(page: Page, gateway, user) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": gateway.url}])


def test_every_console_page_loads_without_a_violation(watched, gateway, alice, acme, make_provider):
    make_provider(acme, name="first", weight=60)
    make_provider(acme, name="second", weight=40)
    sign_in(watched, gateway, alice)
    for path, heading in [
        ("/", "Providers of Acme"), ("/routes/", "Model routes"), ("/requests/", "Requests"),
        ("/playground/", "Playground"), ("/tokens/", "API tokens"), ("/members/", "Members"), ("/audit/", "Audit log"),
    ]:  # fmt: skip
        response = watched.goto(f"{gateway.url}{path}")
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        expect(watched.locator("h1").first).to_contain_text(heading.split(" of ")[0])
        no_violations(watched)


def test_an_inline_weight_edit_swaps_its_share_bar_without_a_violation(watched, gateway, alice, acme, make_provider):
    config = make_provider(acme, name="first", weight=60)
    make_provider(acme, name="second", weight=40)
    sign_in(watched, gateway, alice)
    watched.goto(f"{gateway.url}/")
    weight = watched.get_by_label("Weight of first")
    weight.fill("20")
    weight.press("Tab")  # `change` sends it
    expect(watched.locator(f"#share-{config.pk} .share-label")).to_have_text("33%")
    assert "pct-33" in watched.locator(f"#share-{config.pk} .bar").get_attribute("class")
    width = watched.locator(f"#share-{config.pk} .bar").evaluate("el => el.getBoundingClientRect().width")
    assert width > 0  # the class gives it its width: no inline style needed
    no_violations(watched)


def test_the_board_goes_live_over_its_websocket(watched, gateway, alice, acme, make_provider):
    make_provider(acme, name="live-one")
    sign_in(watched, gateway, alice)
    watched.goto(f"{gateway.url}/status/")
    expect(watched.locator("#board-connection")).to_have_text("live")
    no_violations(watched)


def test_the_tenant_switcher_submits_without_an_inline_handler(watched, gateway, alice, acme, globex):
    MembershipFactory(user=alice, tenant=globex, role="viewer")
    sign_in(watched, gateway, alice)
    watched.goto(f"{gateway.url}/")
    expect(watched.locator("h1").first).to_contain_text("Providers of Acme")
    watched.select_option("select[name=tenant]", label="Globex")
    expect(watched.locator("h1").first).to_contain_text("Providers of Globex")
    no_violations(watched)


def test_the_login_page_and_its_form_work(watched, gateway, alice):
    watched.goto(f"{gateway.url}/login/")
    watched.fill("input[name=username]", "alice")
    watched.fill("input[name=password]", "password123")
    watched.click("button[type=submit]")
    expect(watched.locator("h1").first).to_contain_text("Providers of Acme")
    no_violations(watched)


def test_swagger_ui_renders_from_our_static_files(watched, gateway, db):
    outside: list[str] = []
    watched.on("request", lambda r: outside.append(r.url) if not r.url.startswith(gateway.url) else None)
    watched.goto(f"{gateway.url}/api/docs/")
    expect(watched.locator(".swagger-ui .info .title")).to_contain_text("AxonFlow API")
    expect(watched.locator(".opblock").first).to_be_visible()
    assert outside == []
    no_violations(watched)


def test_the_admin_works_under_the_policy(watched, gateway, acme, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "password123")
    MembershipFactory(user=root, tenant=acme, role="admin")
    sign_in(watched, gateway, root)
    pages = ["/admin/", "/admin/tenants/tenant/", f"/admin/tenants/tenant/{acme.pk}/change/", "/admin/auth/user/add/"]
    for path in pages:
        watched.goto(f"{gateway.url}{path}")
        expect(watched.locator("#content")).to_be_visible()
        no_violations(watched)


def test_the_watch_does_report_a_violation(watched, gateway, db):
    watched.goto(f"{gateway.url}/login/")
    watched.evaluate("""document.body.insertAdjacentHTML("beforeend", '<p style="color: red">inline</p>')""")
    watched.wait_for_function("window.__violations.length > 0")
    with pytest.raises(AssertionError):
        no_violations(watched)
