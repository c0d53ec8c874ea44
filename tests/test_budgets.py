"""Budgets on one instance (issue 14; SPEC §2 rule 8): a request reserves its worst
case before any upstream call and is settled at its actual cost when it ends; a
request that cannot reserve is refused with budget_exceeded and reaches no upstream;
the ledger equals the usage records to the 10⁻⁸ dollar.

Prices are set so that costs are exact: input free, output $1 per 1K tokens, the fake
upstream answering 10 completion tokens: $0.01 a request. `max_tokens` sets the
reservation: 10 → $0.01, 50 → $0.05.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from axonflow_site.errors import BudgetExceeded
from routing import cache
from tenants.models import TokenScope
from tenants.rls import tenant_context
from tests.conftest import forget_redis_keys, make_token
from usage import budgets, holds
from usage.models import Budget, BudgetSpend, UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def fresh_book():
    """Nothing held or spent from before: this process's book, and Redis's budget keys."""
    holds.reset()
    forget_redis_keys("budget:*")
    yield
    holds.reset()


@pytest.fixture
def priced(acme, make_provider, upstream):
    """acme's one provider `p`: $0.01 for a request of 10 completion tokens."""
    upstream.configure("p", token_counts=[5, 10])
    return make_provider(acme, name="p", base_url=upstream.base_url("p"), api_key="sk-test-pppp1111",
                         cost_input_per_1k=Decimal("0"), cost_output_per_1k=Decimal("1"))  # fmt: skip


def budget(tenant, **fields) -> Budget:
    values = {"name": "monthly", "period": "month", "limit_usd": Decimal("1.00"), **fields}
    with tenant_context(tenant.pk):
        made = Budget.objects.create(tenant=tenant, **values)
    cache.invalidate_tenant(tenant.pk)
    return made


def ask(client, max_tokens: int = 10, stream: bool = False):
    body = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "stream": stream}
    return client.post(CHAT, json=body)


def settle_and_flush() -> None:
    async_to_sync(holds.drain)()
    usage_writer.flush()


def ledger(b: Budget) -> BudgetSpend:
    with tenant_context(b.tenant_id):
        return BudgetSpend.objects.get(budget=b)


def records(tenant) -> list[UsageRecord]:
    with tenant_context(tenant.pk):
        return list(UsageRecord.objects.filter(tenant=tenant))


def test_it_serves_up_to_the_limit_then_refuses_before_any_upstream_call(gateway, acme, priced, upstream):
    b = budget(acme, limit_usd=Decimal("0.05"))
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        statuses = [ask(client).status_code for _ in range(5)]
        refused = ask(client)
    assert statuses == [200] * 5
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["details"] == {"budget": "monthly", "period": "month", "period_start": error["details"]["period_start"],
                                "spent": "0.05000000", "limit": "0.05000000", "unit": "USD"}  # fmt: skip
    assert upstream.counts("p")["chat"] == 5  # the refused request reached no upstream
    settle_and_flush()
    spend = ledger(b)
    assert (spend.spent_usd, spend.spent_tokens, spend.requests) == (Decimal("0.05"), 75, 5)
    stored = records(acme)
    assert sum(r.cost for r in stored) == spend.spent_usd
    assert [r.error_code for r in stored].count("budget_exceeded") == 1


def test_a_reservation_above_the_cost_releases_the_difference(gateway, acme, priced, upstream):
    """Must-show 2: 50 requests reserving $0.05 and costing $0.01 spend exactly $0.50,
    and further requests are admitted."""
    b = budget(acme, limit_usd=Decimal("0.60"))
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        assert [ask(client, max_tokens=50).status_code for _ in range(50)] == [200] * 50
        async_to_sync(holds.drain)()
        # $0.10 left: two more requests reserving $0.05 each fit; a third would not.
        assert [ask(client, max_tokens=50).status_code for _ in range(2)] == [200, 200]
    settle_and_flush()
    assert ledger(b).spent_usd == Decimal("0.52")
    assert sum(r.cost for r in records(acme)) == Decimal("0.52")
    standing = async_to_sync(holds.book().standing)(budgets_rule(acme), ledger(b).period_start)
    assert (standing.spent_units, standing.reserved_units) == (52_000_000, 0)


def budgets_rule(tenant):
    return cache.load_snapshot(tenant.pk).budgets[0]


def test_concurrent_requests_never_overshoot(gateway, acme, priced, upstream):
    """On one instance: 60 requests at once against a $0.25 budget, $0.01 each."""
    b = budget(acme, limit_usd=Decimal("0.25"))
    token = make_token(acme, TokenScope.COMPLETIONS)

    async def fire():
        import aiohttp

        body = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:

            async def one():
                async with session.post(gateway.url + CHAT, json=body) as r:
                    return r.status

            return await asyncio.gather(*(one() for _ in range(60)))

    statuses = asyncio.run(fire())
    assert statuses.count(200) == 25 and statuses.count(429) == 35
    assert upstream.counts("p")["chat"] == 25
    settle_and_flush()
    assert ledger(b).spent_usd == Decimal("0.25")


def test_a_token_budget_counts_only_that_tokens_requests(gateway, acme, priced, upstream):
    from tenants.models import ApiToken

    limited, free = make_token(acme, TokenScope.COMPLETIONS, "limited"), make_token(acme, TokenScope.COMPLETIONS, "free")
    token = ApiToken.objects.get(tenant=acme, name="limited")
    budget(acme, name="limited tokens", token=token, limit_usd=None, limit_tokens=45)  # 15 tokens a request
    with gateway.client(limited) as a, gateway.client(free) as b:
        assert [ask(a).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert [ask(b).status_code for _ in range(4)] == [200] * 4
    error = None
    with gateway.client(limited) as a:
        error = ask(a).json()["error"]
    assert error["details"]["unit"] == "tokens" and error["details"]["limit"] == 45


def test_a_stream_cut_by_the_client_is_settled_at_what_was_delivered(gateway, acme, priced, upstream):
    """Must-show 4: the hold is settled at the cost of the text delivered, and the usage
    record says the same."""
    b = budget(acme, limit_usd=Decimal("5"))
    upstream.configure("p", token_counts=[5, 10], chunk_delay_ms=100, reply=" ".join(["word"] * 40))
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        body = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": True}
        with client.stream("POST", CHAT, json=body) as r:
            seen = 0
            for line in r.iter_lines():
                if line.startswith("data: ") and "content" in line:
                    seen += 1
                    if seen == 8:
                        break
    for _ in range(100):
        settle_and_flush()
        if records(acme):
            break
        asyncio.run(asyncio.sleep(0.05))
    (record,) = records(acme)
    assert record.error_code == "client_cancelled"
    assert 0 < record.completion_tokens < 40
    assert record.cost == Decimal(record.completion_tokens) / 1000
    assert ledger(b).spent_usd == record.cost
    standing = async_to_sync(holds.book().standing)(budgets_rule(acme), ledger(b).period_start)
    assert standing.reserved_units == 0 and standing.spent_units == budgets.to_units(record.cost)


def test_an_expired_hold_is_released(acme, settings):
    """A hold left by a process that died stops counting once it expires."""
    settings.AXONFLOW_BUDGET_HOLD_SECONDS = 0.2
    b = budget(acme, limit_usd=Decimal("0.01"))
    rule = budgets_rule(acme)

    async def scenario():
        first = holds.new_hold([rule], None, 1_000_000, 10, "r1")
        await holds.reserve(first)  # never settled: its process "died"
        with pytest.raises(BudgetExceeded):
            await holds.reserve(holds.new_hold([rule], None, 1_000_000, 10, "r2"))
        await asyncio.sleep(0.3)
        await holds.reserve(holds.new_hold([rule], None, 1_000_000, 10, "r3"))

    asyncio.run(scenario())
    assert b.pk


# --- the API -----------------------------------------------------------------------------


def test_the_api_replaces_and_lists_budgets_with_their_spend(gateway, acme, priced, acme_api):
    put = acme_api.put("/api/v1/budgets/", {"time_zone": "Europe/Berlin", "budgets": [
        {"name": "daily", "period": "day", "limit_usd": "2.50", "soft_percent": 50},
        {"name": "tokens", "limit_tokens": 1000},
    ]})  # fmt: skip
    assert put.status_code == 200, put.content
    body = put.json()
    assert body["time_zone"] == "Europe/Berlin"
    assert [(b["name"], b["limit_usd"], b["limit_tokens"]) for b in body["budgets"]] == [
        ("daily", "2.50000000", None), ("tokens", None, 1000)]  # fmt: skip
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        assert ask(client).status_code == 200
    settle_and_flush()
    listed = acme_api.get("/api/v1/budgets/").json()["budgets"]
    daily = next(b for b in listed if b["name"] == "daily")
    assert (daily["spent_usd"], daily["spent_tokens"], daily["requests"]) == ("0.01000000", 15, 1)
    assert daily["percent"] == 0.4
    usage = acme_api.get("/api/v1/usage/").json()
    assert Decimal(str(usage["totals"]["cost"])) == Decimal(daily["spent_usd"])


@pytest.mark.parametrize("bad", [
    {"budgets": [{"name": "x"}]},  # no limit
    {"budgets": [{"name": "x", "limit_usd": "-1"}]},
    {"budgets": [{"name": "x", "limit_usd": "NaN"}]},
    {"budgets": [{"name": "x", "limit_usd": "0.000000001"}]},
    {"budgets": [{"name": "x", "limit_usd": True}]},
    {"budgets": [{"name": "x", "limit_tokens": -5}]},
    {"budgets": [{"name": "x", "limit_tokens": "5"}]},
    {"budgets": [{"name": "x", "limit_usd": 1, "period": "week"}]},
    {"budgets": [{"name": "x", "limit_usd": 1, "soft_percent": 0}]},
    {"budgets": [{"name": "x", "limit_usd": 1, "token_id": 999999}]},
    {"budgets": [{"name": "", "limit_usd": 1}]},
    {"budgets": [{"name": "x", "limit_usd": 1}, {"name": "x", "limit_usd": 2}]},
    {"budgets": [{"name": "x", "limit_usd": 1, "colour": "red"}]},
    {"budgets": "all of them"},
    {"budgets": [], "time_zone": "Mars/Olympus"},
    {},
])  # fmt: skip
def test_bad_budgets_are_refused_and_change_nothing(acme, acme_api, bad):
    budget(acme, name="kept")
    r = acme_api.put("/api/v1/budgets/", bad)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "validation_error"
    with tenant_context(acme.pk):
        assert list(Budget.objects.filter(tenant=acme).values_list("name", flat=True)) == ["kept"]
    acme.refresh_from_db()
    assert acme.time_zone == "UTC"


def test_another_tenants_budgets_are_invisible(acme, globex, acme_api):
    budget(globex, name="globex-only")
    assert acme_api.get("/api/v1/budgets/").json()["budgets"] == []
    assert acme_api.put("/api/v1/budgets/", {"budgets": []}).status_code == 200
    with tenant_context(globex.pk):
        assert Budget.objects.filter(tenant=globex).count() == 1


def test_budget_changes_are_audited(acme, acme_api):
    from tenants.models import AuditEntry

    acme_api.put("/api/v1/budgets/", {"budgets": [{"name": "m", "limit_usd": "10"}]})
    acme_api.put("/api/v1/budgets/", {"budgets": [{"name": "m", "limit_usd": "20"}]})
    acme_api.put("/api/v1/budgets/", {"budgets": []})
    with tenant_context(acme.pk):
        entries = list(AuditEntry.objects.filter(tenant=acme, object_type="budget").order_by("id"))
    assert [e.action for e in entries] == ["create", "update", "delete"]
    assert (entries[1].before, entries[1].after) == ({"limit_usd": "10.00000000"}, {"limit_usd": "20.00000000"})
