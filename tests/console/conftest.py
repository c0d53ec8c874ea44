"""Console fixtures: personas logged in, and a small world of objects in acme and
globex that every console URL can be pointed at (the role matrix uses it)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from providers.models import ModelRoute, ModelRouteTarget, ProviderConfig
from tenants.models import ApiToken, Membership, Tenant, TokenScope
from tenants.rls import tenant_context
from tests.conftest import _logged_in as logged_in
from usage.models import UsageRecord


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

    def url_kwargs(self) -> dict[str, object]:
        """Console URL keyword arguments, by the names every page module uses."""
        return {
            "name": self.provider.name,
            "route": self.route.name,
            "token_id": self.token.pk,
            "member_id": self.membership.pk,
            "record_id": self.record.pk,
        }


def make_world(tenant: Tenant, member, make_provider) -> World:
    provider = make_provider(tenant, name=f"{tenant.slug}-primary", api_key="sk-world-0123456789abcdef")
    with tenant_context(tenant.pk):
        route = ModelRoute.objects.create(tenant=tenant, name=f"{tenant.slug}-fast")
        ModelRouteTarget.objects.create(tenant=tenant, route=route, provider=provider, model="gpt-4o-mini", weight=50)
        record = UsageRecord.objects.create(
            tenant=tenant, provider=provider, provider_name=provider.name, status="success", model="gpt-4o-mini",
            attempts=[{"provider": provider.name, "outcome": "success", "status_code": 200, "latency_ms": 3.0,
                       "error": ""}],
            attempt_count=1, trace={"pool": "all providers", "candidates": [], "draw": {"method": "weighted"}},
        )  # fmt: skip
    token, _raw = ApiToken.issue(tenant, "world", TokenScope.COMPLETIONS)
    membership = Membership.objects.get(tenant=tenant, user=member)
    return World(tenant, provider, route, token, membership, record)


@pytest.fixture
def acme_world(acme, alice, bob, dave, make_provider) -> World:
    return make_world(acme, bob, make_provider)


@pytest.fixture
def globex_world(globex, carol, make_provider) -> World:
    return make_world(globex, carol, make_provider)
