"""The console's everyday flows in a real browser (issue 9, "Must show" 1 and 3): headless
Chromium against the whole ASGI app under uvicorn (the `gateway` fixture: HTTP, the
playground's event stream and the board's WebSocket), providers on the fake upstream.

Each mutation made through a page leaves exactly one audit entry, by the signed-in
user, with the changed fields before and after and no key or raw token in it; the
tests check that right after the step (`AuditLog`).
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from django.test import Client
from playwright.sync_api import Page, expect

from providers.models import ProviderConfig
from routing.health import db_thread
from tenants.models import ApiToken, AuditEntry
from tenants.rls import tenant_context
from tests.browser.conftest import requires_chromium
from tests.conftest import make_token
from tests.factories import MembershipFactory
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

pytestmark = [requires_chromium, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KEY = "sk-browser-secret-7f3a9c1d"


def sign_in(page: Page, gateway, user) -> None:
    """Give the browser a session of `user` (the login form itself has its own test)."""
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": gateway.url}])


def mark_page(page: Page) -> None:
    """Tag the loaded document; `still_same_page` fails if it was navigated or reloaded."""
    page.evaluate("window.__marker = 1")


def still_same_page(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded or navigated away"


class AuditLog:
    """The tenant's audit entries written since the last check."""

    def __init__(self, tenant) -> None:
        self.tenant = tenant
        self.seen = max((e.pk for e in self._since(0)), default=0)

    def _since(self, pk: int) -> list[AuditEntry]:
        with tenant_context(self.tenant.pk):
            return list(AuditEntry.objects.filter(tenant=self.tenant, pk__gt=pk).order_by("pk"))

    def nothing_new(self) -> None:
        assert [str(e) for e in self._since(self.seen)] == []

    def one_new(self, *, actor: str, secrets: tuple[str, ...] = (), **fields) -> AuditEntry:
        """The one entry written since the last check, by the user `actor`, with `fields`
        (object_type, action, object_name, before, after…), and none of `secrets`."""
        new = self._since(self.seen)
        assert len(new) == 1, f"expected exactly one audit entry, got {[str(e) for e in new]}"
        (entry,) = new
        self.seen = entry.pk
        assert (entry.actor_kind, entry.actor) == ("user", actor)
        for name, value in fields.items():
            assert getattr(entry, name) == value, f"{name}: {getattr(entry, name)!r} != {value!r}"
        stored = json.dumps([entry.before, entry.after, entry.object_name])
        for secret in secrets:
            assert secret not in stored
        return entry


# --- 1. log in ---------------------------------------------------------------------------------


def test_log_in_through_the_form(page, gateway, alice, acme, make_provider):
    make_provider(acme, name="acme-openai")

    page.goto(f"{gateway.url}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("password123")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Providers of Acme")).to_be_visible()
    expect(page.locator("tr[data-provider]")).to_have_count(1)
    expect(page.locator("tr[data-provider=acme-openai]")).to_be_visible()
    expect(page.locator(".usermenu .user")).to_have_text("alice")


# --- 2. add a provider, with a validation error first -------------------------------------------


def test_add_a_provider_through_the_form(page, gateway, upstream, alice, acme):
    sign_in(page, gateway, alice)
    audit = AuditLog(acme)
    page.goto(f"{gateway.url}/")
    expect(page.locator("#providers-empty")).to_contain_text("No providers yet")
    page.get_by_role("link", name="Add provider").click()
    expect(page.get_by_role("heading", name="Add a provider")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("local-llama")
    page.get_by_label("Type", exact=True).select_option("ollama")
    expect(page.locator("#type-fields")).to_have_attribute("data-type", "ollama")  # swapped by htmx
    expect(page.locator("#field-base_url .help")).to_have_text("Required for ollama.")
    page.get_by_label("Model", exact=True).fill("llama3.2")
    page.get_by_label("API key").fill(KEY)
    page.get_by_label("Weight", exact=True).fill("30")
    page.get_by_role("button", name="Add provider", exact=True).click()

    base_url = page.get_by_label("Base URL")
    expect(page.locator("#field-base_url .field-error")).to_have_text("Is required for ollama providers")
    expect(base_url).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name", exact=True)).to_have_value("local-llama")  # what was typed stays
    expect(page.get_by_label("Type", exact=True)).to_have_value("ollama")
    expect(page.get_by_label("API key")).to_have_value("")  # write-only: never sent back to the page
    assert KEY not in page.content()
    audit.nothing_new()
    with tenant_context(acme.pk):
        assert not ProviderConfig.objects.filter(tenant=acme).exists()

    base_url.fill(upstream.base_url("local-llama", "ollama"))
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Add provider", exact=True).click()

    expect(page.get_by_role("heading", name="Providers of Acme")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Provider 'local-llama' added.")
    row = page.locator("tr[data-provider=local-llama]")
    expect(row.locator(".type-model")).to_contain_text("Ollama")
    expect(row.locator(".type-model .model")).to_have_text("llama3.2")
    expect(row.get_by_label("Weight of local-llama")).to_have_value("30")
    expect(row.locator(".key")).to_contain_text("••••")
    expect(row.locator(".share")).to_have_text("100%")
    assert KEY not in page.content()

    with tenant_context(acme.pk):
        config = ProviderConfig.objects.get(tenant=acme, name="local-llama")
    entry = audit.one_new(
        actor="alice", object_type="provider", action="create", object_id=str(config.pk), object_name="local-llama",
        before=None, secrets=(KEY, config.api_key_encrypted),
    )  # fmt: skip
    assert entry.after["type"] == "ollama" and entry.after["model"] == "llama3.2" and entry.after["weight"] == 30
    assert entry.after["base_url"] == upstream.base_url("local-llama", "ollama")
    assert entry.after["api_key"] == "set"


# --- 3. change a weight inline ------------------------------------------------------------------


def test_change_a_weight_inline_and_see_the_new_share(page, gateway, alice, acme, make_provider):
    a = make_provider(acme, name="a", weight=50, api_key=KEY)
    b = make_provider(acme, name="b", weight=40)
    sign_in(page, gateway, alice)
    audit = AuditLog(acme)
    page.goto(f"{gateway.url}/")
    share_a, share_b = page.locator(f"#share-{a.pk}"), page.locator(f"#share-{b.pk}")
    expect(share_a).to_have_text("56%")
    expect(share_b).to_have_text("44%")
    mark_page(page)

    weight = page.get_by_label("Weight of a")
    weight.fill("150")
    weight.press("Tab")  # `change` sends it
    expect(page.locator(f"#weight-error-{a.pk}")).to_be_visible()
    expect(page.get_by_label("Weight of a")).to_have_attribute("aria-invalid", "true")
    expect(share_a).to_have_text("56%")
    audit.nothing_new()

    weight = page.get_by_label("Weight of a")
    weight.fill("60")
    weight.press("Tab")
    expect(share_a).to_have_text("60%")
    expect(share_b).to_have_text("40%")  # the other row's share moves too (out of band)
    expect(page.locator(f"#weight-error-{a.pk}")).to_have_count(0)
    expect(page.get_by_label("Weight of a")).to_have_value("60")
    still_same_page(page)

    audit.one_new(
        actor="alice", object_type="provider", action="update", object_name="a",
        before={"weight": 50}, after={"weight": 60}, secrets=(KEY,),
    )  # fmt: skip
    page.reload()
    expect(page.locator(f"#share-{a.pk}")).to_have_text("60%")


# --- 4. drain a provider: the list and the open board say so -----------------------------------


def test_drain_a_provider_and_see_the_list_and_the_board_say_so(page, gateway, alice, acme, make_provider):
    a = make_provider(acme, name="a", weight=50, api_key=KEY)
    b = make_provider(acme, name="b", weight=50)
    sign_in(page, gateway, alice)
    audit = AuditLog(acme)

    board = page.context.new_page()
    board.goto(f"{gateway.url}/status/")
    expect(board.locator("#board-connection")).to_have_text("live")
    card = board.locator(f"#provider-{a.pk}")
    expect(card.locator(".operator")).to_have_count(0)
    mark_page(board)

    page.bring_to_front()  # a background tab's timers run at most once a second
    page.goto(f"{gateway.url}/")
    row = page.locator("tr[data-provider=a]")
    row.get_by_text("State…").click()
    row.get_by_label("State", exact=True).select_option(label="Drained")
    row.get_by_role("button", name="Apply").click()
    row = page.locator("tr[data-provider=a]")
    expect(row.locator(".field-error")).to_have_text("Is required: say why, for whoever looks next")
    expect(row.get_by_label("Reason")).to_have_attribute("aria-invalid", "true")
    audit.nothing_new()

    row.get_by_label("Reason").fill("upstream incident #42")
    row.get_by_role("button", name="Apply").click()
    state = page.locator("tr[data-provider=a] .operator-state")
    expect(state.locator(".pill")).to_have_text("Drained")
    expect(state).to_contain_text("by alice")
    expect(state).to_contain_text("upstream incident #42")
    expect(page.locator(f"#share-{a.pk}")).to_have_text("off")
    expect(page.locator(f"#share-{b.pk}")).to_have_text("100%")

    operator = card.locator(".operator")  # pushed over the board's socket
    expect(operator).to_have_text("Drained by alice: “upstream incident #42”")
    expect(card).to_have_class(re.compile(r"\boperator-drained\b"))
    expect(board.locator(f"#provider-{b.pk} .operator")).to_have_count(0)
    still_same_page(board)

    audit.one_new(
        actor="alice", object_type="provider", action="drain", object_name="a",
        before={"operator_state": "", "operator_reason": ""},
        after={"operator_state": "drained", "operator_reason": "upstream incident #42"}, secrets=(KEY,),
    )  # fmt: skip


def probe(api: httpx.Client, name: str) -> None:
    """Run one health probe of `name` through the API, then let the board's publish of
    it finish. Django's SQLite test database is in memory with a shared cache, where a
    write that meets another connection's open read fails at once ("database table is
    locked"); on a file database in WAL mode, as AxonFlow runs SQLite, readers do not
    block a writer."""
    assert api.post(f"/api/v1/providers/{name}/health-check/").status_code == 200
    db_thread.flush()


# --- 5. a failing upstream turns its card unhealthy on an open board -------------------------------


def test_a_failing_upstream_turns_its_card_unhealthy_on_the_open_board(page, gateway, upstream, alice, acme,
                                                                     make_provider):  # fmt: skip
    steady = make_provider(acme, name="steady", base_url=upstream.base_url("steady"), api_key=KEY)
    flaky = make_provider(acme, name="flaky", base_url=upstream.base_url("flaky"), api_key=KEY)
    upstream.configure("flaky", failure_rate=1.0, failure_kind="500")
    sign_in(page, gateway, alice)
    page.goto(f"{gateway.url}/status/")
    expect(page.locator("#board-connection")).to_have_text("live")
    flaky_card, steady_card = page.locator(f"#provider-{flaky.pk}"), page.locator(f"#provider-{steady.pk}")
    expect(flaky_card.locator(".status")).to_have_text("unknown")
    mark_page(page)

    with gateway.client(make_token(acme)) as api:
        probe(api, "steady")
        expect(steady_card.locator(".status")).to_have_text("healthy")
        probe(api, "flaky")
        expect(flaky_card.locator(".status")).to_have_text("degraded")
        expect(flaky_card).to_have_class(re.compile(r"\bstatus-degraded\b"))
        for _ in range(2):  # failures_to_unhealthy: 3 in a row
            probe(api, "flaky")
    expect(flaky_card.locator(".status")).to_have_text("unhealthy")
    expect(flaky_card).to_have_class(re.compile(r"\bstatus-unhealthy\b"))
    expect(flaky_card.locator(".probe-error-rate")).to_have_text("100%")
    expect(steady_card.locator(".status")).to_have_text("healthy")
    expect(steady_card.locator(".probe-error-rate")).to_have_text("0%")
    still_same_page(page)


# --- 6. the playground, then that request's trace in the request log ----------------------------


def test_send_a_prompt_in_the_playground_and_open_its_trace(page, gateway, upstream, alice, acme, two):
    a, b = two
    upstream.configure("a", chunk_delay_ms=100)  # a stream a person can watch arrive
    prompt = "hello there, how are you today?"
    sign_in(page, gateway, alice)
    page.goto(f"{gateway.url}/playground/")
    answer = page.locator("#answer")
    # Every text the answer shows on the way: it streams in, piece by piece.
    page.evaluate(
        """() => { const answer = document.getElementById('answer'); window.__answerSeen = [];
             new MutationObserver(() => { window.__answerSeen.push(answer.textContent); })
               .observe(answer, {childList: true, characterData: true, subtree: true}); }"""
    )
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_role("button", name="Send").click()

    expect(answer).to_have_text(f"Echo: {prompt}")
    expect(page.locator("#run-state")).to_have_text("Done.")
    partial = [t for t in page.evaluate("window.__answerSeen") if t and t != f"Echo: {prompt}"]
    assert len(set(partial)) >= 2 and all(f"Echo: {prompt}".startswith(t) for t in partial), partial
    summary = page.locator("#route-summary")
    expect(summary).to_contain_text("Provider")
    expect(summary.locator("dd").first).to_have_text("a")
    attempts = page.locator("#route-attempts tr")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("a")
    expect(attempts.first.locator(".pill")).to_have_text("success")
    link = page.get_by_role("link", name="Open this request in the request log →")
    expect(link).to_be_visible()
    request_id = re.search(r"request_id=([^&]+)", link.get_attribute("href")).group(1)

    assert usage_writer.flush() == 1  # what the writer thread does within a second
    link.click()
    expect(page.get_by_role("heading", name="Requests")).to_be_visible()
    rows = page.locator("#request-log tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("success")
    page.get_by_title("Open the routing trace").click()

    expect(page.get_by_role("heading", name=f"Request {request_id}")).to_be_visible()
    expect(page.get_by_role("heading", name="Why it went there")).to_be_visible()
    expect(page.locator(".trace-answer")).to_contain_text("a was tried first")
    candidates = page.locator("table.candidates tbody tr")
    expect(candidates).to_have_count(2)
    expect(page.locator("table.candidates tr[data-provider=a]")).to_contain_text("chosen first · success")
    expect(page.locator("table.candidates tr[data-provider=b]")).to_contain_text("eligible, not needed")
    attempt_rows = page.locator("table.attempts tbody tr")
    expect(attempt_rows).to_have_count(1)
    expect(attempt_rows.first).to_contain_text("a")
    expect(attempt_rows.first).to_contain_text("200")
    assert KEY not in page.content() and "sk-test-aaaa1111" not in page.content()


# --- 7. create a token, use it, revoke it ---------------------------------------------------------


def test_create_use_and_revoke_a_token(page, gateway, alice, acme):
    sign_in(page, gateway, alice)
    audit = AuditLog(acme)
    page.goto(f"{gateway.url}/tokens/")
    page.get_by_label("Name", exact=True).fill("ci-bot")
    page.get_by_label("Scope").select_option(label="Admin (everything)")
    page.get_by_role("button", name="Create token").click()

    new_token = page.locator("#new-token")
    expect(new_token).to_be_visible()
    expect(page.get_by_role("heading", name="Token “ci-bot” created")).to_be_visible()
    raw = new_token.inner_text().strip()
    assert raw
    with tenant_context(acme.pk):
        token = ApiToken.objects.get(tenant=acme, name="ci-bot")
    assert raw.startswith(token.prefix)
    row = page.locator(f"#token-{token.pk}")
    expect(row).to_contain_text("ci-bot")
    expect(row).to_contain_text("active")
    entry = audit.one_new(
        actor="alice", object_type="api_token", action="create", object_id=str(token.pk), object_name="ci-bot",
        before=None, secrets=(raw, token.token_hash),
    )  # fmt: skip
    assert entry.after["scope"] == "admin" and entry.after["prefix"] == token.prefix
    assert entry.after["revoked_at"] is None

    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.get("/api/v1/status/", headers={"Authorization": f"Bearer {raw}"})
        assert r.status_code == 200, r.text
        audit.nothing_new()  # using a token changes no configuration

        page.goto(f"{gateway.url}/tokens/")  # shown once: never again
        expect(page.locator(f"#token-{token.pk}")).to_contain_text("ci-bot")
        expect(page.locator("#new-token")).to_have_count(0)
        assert raw not in page.content()

        page.once("dialog", lambda dialog: dialog.accept())  # "Revoke ci-bot (…)? …"
        page.get_by_role("button", name="Revoke ci-bot").click()
        row = page.locator(f"#token-{token.pk}")
        expect(row.locator(".pill-revoked")).to_have_text("revoked")
        expect(row.get_by_role("button", name="Revoke ci-bot")).to_have_count(0)
        audit.one_new(
            actor="alice", object_type="api_token", action="revoke", object_name="ci-bot",
            before={"revoked_at": None}, secrets=(raw, token.token_hash),
        )  # fmt: skip

        r = http.get("/api/v1/status/", headers={"Authorization": f"Bearer {raw}"})
        assert r.status_code == 401, r.text


# --- 8. switch tenant ---------------------------------------------------------------------------------


def record_request(tenant, provider) -> None:
    with tenant_context(tenant.pk):
        UsageRecord.objects.create(
            tenant=tenant, provider=provider, provider_name=provider.name, status="success", model=provider.model,
            attempts=[{"provider": provider.name, "outcome": "success", "status_code": 200, "latency_ms": 12.0,
                       "error": ""}],
            attempt_count=1, trace={"pool": "all providers", "candidates": [], "draw": {"method": "weighted"}},
        )  # fmt: skip


def test_switch_tenant_and_see_only_that_tenants_data(page, gateway, upstream, alice, acme, globex, make_provider):
    MembershipFactory(user=alice, tenant=globex, role="viewer")
    acme_p = make_provider(acme, name="acme-openai", base_url=upstream.base_url("acme-openai"), api_key=KEY)
    globex_p = make_provider(globex, name="globex-openai", model="gpt-4o", base_url=upstream.base_url("globex-openai"),
                             api_key=KEY)  # fmt: skip
    record_request(acme, acme_p)
    record_request(acme, acme_p)
    record_request(globex, globex_p)
    sign_in(page, gateway, alice)

    page.goto(f"{gateway.url}/")
    expect(page.get_by_role("heading", name="Providers of Acme")).to_be_visible()
    expect(page.locator("tr[data-provider]")).to_have_count(1)
    expect(page.locator("tr[data-provider=acme-openai]")).to_be_visible()

    page.get_by_label("Active tenant").select_option(label="Globex")
    expect(page.get_by_role("heading", name="Providers of Globex")).to_be_visible()
    expect(page.locator("tr[data-provider]")).to_have_count(1)
    expect(page.locator("tr[data-provider=globex-openai]")).to_be_visible()
    expect(page.get_by_text("acme-openai")).to_have_count(0)
    expect(page.get_by_role("link", name="Add provider")).to_have_count(0)  # a viewer in globex

    page.goto(f"{gateway.url}/status/")
    expect(page.get_by_role("heading", name="Live status of Globex")).to_be_visible()
    expect(page.locator("#board-connection")).to_have_text("live")
    cards = page.locator(".provider-card")
    expect(cards).to_have_count(1)
    expect(cards.first).to_have_attribute("data-provider", "globex-openai")
    with gateway.client(make_token(acme)) as acme_api, gateway.client(make_token(globex)) as globex_api:
        probe(acme_api, "acme-openai")
        probe(globex_api, "globex-openai")
    expect(page.locator(f"#provider-{globex_p.pk} .status")).to_have_text("healthy")  # globex's frames arrive
    expect(cards).to_have_count(1)  # acme's, sent first, did not
    expect(page.locator(f"#provider-{acme_p.pk}")).to_have_count(0)

    page.goto(f"{gateway.url}/requests/")
    rows = page.locator("#request-log tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("globex-openai")
    expect(page.locator("[data-total=requests]")).to_have_text("1")
    expect(page.get_by_label("Provider", exact=True)).to_contain_text("globex-openai")
    expect(page.get_by_text("acme-openai")).to_have_count(0)
