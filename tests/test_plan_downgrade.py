"""A tenant whose plan no longer covers a provider's type stops routing to it at once
(SPEC §1): the snapshot marks the config unlicensed, the router skips it, and the
routing trace says `license_required`."""

from __future__ import annotations

import asyncio

import pytest

from providers.adapters import http
from providers.adapters.base import CompletionRequest, Message
from routing import cache, router
from routing.health import breaker
from routing.health.status import DEFAULT_THRESHOLDS
from routing.route import Caller
from routing.selection import RoutingOptions
from tenants.models import Plan, TokenScope
from tests.conftest import make_token
from usage.writer import writer as usage_writer

GEMINI_KEY = "AIzaSyFAKE-gemini-key-000000000000000"
PREFER_GEMINI = RoutingOptions(preferred_provider="gem")


@pytest.fixture
def providers(acme, make_provider, upstream):
    """acme (enterprise): `gem` (gemini, an enterprise type, tried first) and `oa` (openai)."""
    gem = make_provider(
        acme, name="gem", type="gemini", model="gemini-2.5-flash", priority=1,
        base_url=upstream.base_url("gem", "gemini"), api_key=GEMINI_KEY,
    )  # fmt: skip
    oa = make_provider(acme, name="oa", base_url=upstream.base_url("oa", "openai"), api_key="sk-test-oa-00001111")
    return gem, oa


def downgrade(tenant) -> None:
    tenant.plan = Plan.COMMUNITY
    tenant.save()


def route(tenant, options: RoutingOptions = PREFER_GEMINI) -> router.RouteResult:
    """One completion through the router, with the tenant's snapshot as it is now."""
    snapshot = cache.cached_snapshot(tenant.pk) or cache.load_snapshot(tenant.pk)
    breaker.remember_thresholds(tenant.pk, DEFAULT_THRESHOLDS)  # no load on the health thread

    async def go() -> router.RouteResult:
        try:
            request = CompletionRequest([Message("user", "hi")])
            return await router.complete(snapshot, request, options, Caller(tenant.pk))
        finally:
            await http.close_session()

    usage_writer.discard()
    return asyncio.run(go())


def last_trace() -> dict:
    return list(usage_writer.pending)[-1].trace()


def excluded(trace: dict) -> dict[str, str | None]:
    return {row["provider"]: row["excluded"] for row in trace["candidates"]}


def test_an_enterprise_type_routes_while_the_plan_covers_it(acme, providers, upstream):
    result = route(acme)
    assert result.provider_name == "gem"
    assert excluded(last_trace()) == {"gem": None, "oa": None}
    assert upstream.counts("gem")["chat"] == 1


def test_after_a_downgrade_the_next_request_goes_elsewhere_and_the_trace_says_why(acme, providers, upstream):
    assert route(acme).provider_name == "gem"
    downgrade(acme)
    assert cache.cached_snapshot(acme.pk) is None  # the Tenant save dropped the snapshot

    result = route(acme)
    assert result.provider_name == "oa"
    assert [a.provider for a in result.attempts] == ["oa"]
    trace = last_trace()
    assert excluded(trace) == {"gem": "license_required", "oa": None}
    row = next(r for r in trace["candidates"] if r["provider"] == "gem")
    assert row["why"] and row["weight_used"] is None
    assert upstream.counts("gem")["chat"] == 1  # only the request before the downgrade


def test_a_downgraded_provider_alone_leaves_no_healthy_provider(acme, make_provider, upstream):
    from axonflow_site.errors import NoHealthyProvider

    make_provider(acme, name="gem", type="gemini", base_url=upstream.base_url("gem", "gemini"), api_key=GEMINI_KEY)
    downgrade(acme)
    with pytest.raises(NoHealthyProvider):
        route(acme, RoutingOptions())
    assert upstream.requests("gem") == []


def test_community_types_keep_routing_after_a_downgrade(acme, providers):
    downgrade(acme)
    snapshot = cache.load_snapshot(acme.pk)
    licensed = {c.name: c.licensed for c in router.candidates_of(snapshot)}
    assert licensed == {"gem": False, "oa": True}


def test_an_upgrade_routes_to_it_again(acme, providers):
    downgrade(acme)
    assert route(acme).provider_name == "oa"
    acme.plan = Plan.ENTERPRISE
    acme.save()
    assert route(acme).provider_name == "gem"


@pytest.mark.django_db(transaction=True)
def test_over_http_the_downgrade_takes_effect_on_the_next_request(gateway, acme, providers, as_tenant):
    body = {"prompt": "hi", "preferred_provider": "gem"}
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as api:
        assert api.post("/api/v1/completions", json=body).json()["provider"] == "gem"
        downgrade(acme)
        r = api.post("/api/v1/completions", json=body)
    assert r.status_code == 200 and r.json()["provider"] == "oa"

    usage_writer.flush()
    from usage.models import UsageRecord

    with as_tenant(acme):
        record = UsageRecord.objects.filter(tenant=acme).order_by("-created", "-pk").first()
    assert excluded(record.trace)["gem"] == "license_required"
