"""Console fixtures: personas logged in, and a small world of objects in acme and
globex that every console URL can be pointed at (the role matrix uses it)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.utils import timezone

from providers.models import HealthResult, ModelRoute, ModelRouteTarget, ProviderConfig
from tenants.models import ApiToken, Membership, Tenant, TokenScope
from tenants.rls import tenant_context
from tests.conftest import _logged_in as logged_in
from usage.metrics import BUCKET_COUNT
from usage.models import Budget, BudgetSpend, MetricBucket, UsageRecord


@pytest.fixture
def dave_client(dave):
    return logged_in(dave)


@dataclass
class World:
    """One of each object in a tenant: what console URLs take as arguments."""

    tenant: Tenant
    provider: ProviderConfig
    route: ModelRoute
    token: ApiToken
    membership: Membership
    record: UsageRecord
    # More of the tenant's data, for tests that check nothing of it leaks or changes
    # (tests/test_cross_tenant.py); no console URL takes them as arguments.
    standby: ProviderConfig | None = None
    health: HealthResult | None = None
    bucket: MetricBucket | None = None
    admin_token: ApiToken | None = None
    budget: Budget | None = None

    def url_kwargs(self) -> dict[str, object]:
        """Console URL keyword arguments, by the names every page module uses."""
        return {
            "name": self.provider.name,
            "route": self.route.name,
            "token_id": self.token.pk,
            "member_id": self.membership.pk,
            "record_id": self.record.pk,
            "budget_id": self.budget.pk if self.budget else 0,
        }


def make_world(tenant: Tenant, member, make_provider) -> World:
    """Every kind of tenant data, each named after the tenant's slug (so a page or
    response that shows another tenant's object names it)."""
    slug = tenant.slug
    provider = make_provider(tenant, name=f"{slug}-primary", api_key="sk-world-0123456789abcdef")
    standby = make_provider(tenant, name=f"{slug}-standby", type="anthropic", model=f"{slug}-model", priority=-1)
    token, _raw = ApiToken.issue(tenant, "world", TokenScope.COMPLETIONS)
    admin_token, _raw = ApiToken.issue(tenant, f"{slug}-ops", TokenScope.ADMIN)
    with tenant_context(tenant.pk):
        route = ModelRoute.objects.create(tenant=tenant, name=f"{slug}-fast")
        ModelRouteTarget.objects.create(tenant=tenant, route=route, provider=provider, model="gpt-4o-mini", weight=50)
        attempt = {"provider": provider.name, "outcome": "success", "status_code": 200, "latency_ms": 3.0, "error": ""}
        candidate = {
            "provider": provider.name,
            "priority": 0,
            "weight": 50,
            "weight_used": 50,
            "status": "unknown",
            "operator_state": "",
            "excluded": False,
            "why": "",
        }
        draw = {
            "method": "weighted",
            "among": [{"provider": provider.name, "weight": 50}],
            "total": 50,
            "point": 7.5,
            "chosen": provider.name,
        }
        record = UsageRecord.objects.create(
            tenant=tenant, token=token, provider=provider, provider_name=provider.name, status="success",
            model="gpt-4o-mini", model_requested=route.name, request_id=f"{slug}-request-1", attempts=[attempt],
            providers_tried=[provider.pk], attempt_count=1, prompt_tokens=3, completion_tokens=5, total_tokens=8,
            trace={"pool": f"model route {route.name}", "candidates": [candidate], "draw": draw},
        )  # fmt: skip
        health = HealthResult.objects.create(
            tenant=tenant, provider=provider, status="unhealthy", latency_ms=12.0, error=f"{slug} upstream said no"
        )
        minute = timezone.now().replace(second=0, microsecond=0)
        bucket = MetricBucket.objects.create(
            tenant=tenant, provider=provider, minute=minute, request_count=1, latency_sum_ms=3.0,
            latency_histogram=[1] + [0] * (BUCKET_COUNT - 1), prompt_tokens=3, completion_tokens=5,
        )  # fmt: skip
        budget = Budget.objects.create(tenant=tenant, name=f"{slug}-monthly", limit_usd=100, token=token)
        BudgetSpend.objects.create(tenant=tenant, budget=budget, period_start=minute.date().replace(day=1),
                                   spent_usd=1, spent_tokens=8, requests=1)  # fmt: skip
    membership = Membership.objects.get(tenant=tenant, user=member)
    return World(tenant, provider, route, token, membership, record, standby, health, bucket, admin_token, budget)


@pytest.fixture
def acme_world(acme, alice, bob, dave, make_provider) -> World:
    return make_world(acme, bob, make_provider)


@pytest.fixture
def globex_world(globex, carol, make_provider) -> World:
    return make_world(globex, carol, make_provider)
