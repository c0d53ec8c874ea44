"""The budgets page: each budget's spend this period as a bar with its projection; add,
change and delete by the same rules as the API; admins only, tenant-scoped, audited;
the board names the budgets past their soft threshold."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from tenants.models import AuditEntry
from tenants.rls import tenant_context
from usage.budgets import period_bounds
from usage.models import Budget, BudgetSpend

pytestmark = pytest.mark.django_db

URL = "/budgets/"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def spent(tenant, budget: Budget, usd: str, tokens: int = 0) -> None:
    start, _ = period_bounds(budget.period, tenant.time_zone, timezone.now())
    with tenant_context(tenant.pk):
        BudgetSpend.objects.create(tenant=tenant, budget=budget, period_start=start, spent_usd=Decimal(usd),
                                   spent_tokens=tokens, requests=3)  # fmt: skip


def budgets_of(tenant) -> list[tuple]:
    with tenant_context(tenant.pk):
        return list(Budget.objects.filter(tenant=tenant).order_by("name").values_list("name", "limit_usd", "limit_tokens"))


def test_alice_sees_each_budget_with_its_bar_and_projection(alice_client, acme):
    with tenant_context(acme.pk):
        monthly = Budget.objects.create(tenant=acme, name="monthly", limit_usd=Decimal("10"), soft_percent=50)
    spent(acme, monthly, "6.00")
    html = alice_client.get(URL).content.decode()
    assert "monthly" in html and "$6 / $10" in html
    assert '<progress class="spend soft" max="100" value="60"' in html
    assert "past 50%" in html
    assert "% by " in html  # the projection to the period's end


def test_an_empty_list_says_so(alice_client):
    assert "No budgets yet" in alice_client.get(URL).content.decode()


def test_alice_adds_then_changes_a_budget_keeping_its_spend(alice_client, acme):
    r = alice_client.post(URL, {"name": "daily", "period": "day", "limit_usd": "2.50", "soft_percent": "80", "enabled": "on"})
    assert r.status_code == 302
    assert budgets_of(acme) == [("daily", Decimal("2.50"), None)]
    with tenant_context(acme.pk):
        budget = Budget.objects.get(tenant=acme, name="daily")
    spent(acme, budget, "1.00")
    alice_client.post(URL, {"name": "daily", "period": "day", "limit_usd": "5", "limit_tokens": "1000", "enabled": "on"})
    assert budgets_of(acme) == [("daily", Decimal("5"), 1000)]
    with tenant_context(acme.pk):
        assert BudgetSpend.objects.get(budget=budget).spent_usd == Decimal("1.00")
        assert [e.action for e in AuditEntry.objects.filter(tenant=acme, object_type="budget")] == ["update", "create"]


@pytest.mark.parametrize("form", [
    {"name": "x"},
    {"name": "x", "limit_usd": "-3"},
    {"name": "x", "limit_usd": "ten"},
    {"name": "x", "limit_tokens": "1.5"},
    {"name": "x", "limit_usd": "1", "soft_percent": "0"},
    {"name": "x", "limit_usd": "1", "period": "year"},
    {"name": "x", "limit_usd": "1", "token_id": "99999999"},
    {"name": "", "limit_usd": "1"},
])  # fmt: skip
def test_a_bad_form_shows_the_error_and_changes_nothing(alice_client, acme, form):
    r = alice_client.post(URL, form)
    assert r.status_code == 200
    assert 'class="form-errors" role="alert"' in r.content.decode()
    assert budgets_of(acme) == []


def test_alice_deletes_a_budget(alice_client, acme):
    with tenant_context(acme.pk):
        budget = Budget.objects.create(tenant=acme, name="gone", limit_usd=1)
    assert alice_client.post(f"/budgets/{budget.pk}/delete/").status_code == 302
    assert budgets_of(acme) == []


def test_bob_the_viewer_and_carol_of_globex_cannot(bob_client, carol_client, acme):
    with tenant_context(acme.pk):
        budget = Budget.objects.create(tenant=acme, name="acme-only", limit_usd=1)
    assert bob_client.get(URL).status_code == 403
    assert bob_client.post(URL, {"name": "x", "limit_usd": "1"}).status_code == 403
    assert "acme-only" not in carol_client.get(URL).content.decode()
    assert carol_client.post(f"/budgets/{budget.pk}/delete/").status_code == 404
    assert budgets_of(acme) == [("acme-only", Decimal("1.00000000"), None)]


def test_the_board_names_the_budgets_past_their_soft_threshold(alice_client, acme):
    with tenant_context(acme.pk):
        quiet = Budget.objects.create(tenant=acme, name="quiet", limit_usd=Decimal("100"))
        busy = Budget.objects.create(tenant=acme, name="busy", limit_usd=Decimal("10"), soft_percent=80)
    spent(acme, quiet, "1")
    spent(acme, busy, "9")
    html = alice_client.get("/status/").content.decode()
    assert 'id="budgets-soft"' in html and "busy (90.0%)" in html
    assert "quiet" not in html.split('id="budgets-soft"')[1].split("</p>")[0]
