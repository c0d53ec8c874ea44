"""SPEC §2 rule 0-1 through the APIs: the model asked for picks the pool (a served
model, a model route, a provider, `auto`), each attempt is sent its own upstream
model, and a request no provider of the pool can serve is a 400 naming the feature."""

from __future__ import annotations

import openai
import pytest

from providers.models import ModelRoute, ModelRouteTarget
from tenants.models import TokenScope
from tenants.rls import tenant_context
from tests.api.test_v1_dropin import PNG, make
from tests.conftest import make_token
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)
COMPLETIONS = "/api/v1/completions"


@pytest.fixture
def token(acme) -> str:
    return make_token(acme, TokenScope.COMPLETIONS)


@pytest.fixture
def client(gateway, token) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0)


@pytest.fixture
def fast(acme, upstream):
    """Route `fast`: an OpenAI provider sent gpt-4o (tried first), then an Anthropic one
    sent its own model."""
    oa = make(acme, "oa", "openai", upstream, model="gpt-4o-mini", priority=1)
    an = make(acme, "an", "anthropic", upstream)
    with tenant_context(acme.pk):
        route = ModelRoute.objects.create(tenant=acme, name="fast")
        ModelRouteTarget.objects.create(tenant=acme, route=route, provider=oa, model="gpt-4o", weight=100, position=0)
        ModelRouteTarget.objects.create(
            tenant=acme, route=route, provider=an, model="claude-sonnet-4-20250514", weight=0, position=1
        )
    return oa, an


def records(tenant) -> list[UsageRecord]:
    usage_writer.flush()
    with tenant_context(tenant.pk):
        return list(UsageRecord.objects.filter(tenant=tenant).order_by("created", "pk"))


def test_a_model_one_provider_serves_routes_to_it(client, acme, upstream, fast):
    oa, an = fast
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-axonflow-provider"] == "oa"
    assert upstream.requests("oa")[-1].body["model"] == "gpt-4o-mini"
    assert upstream.requests("an") == []
    (record,) = records(acme)
    assert record.model_requested == "gpt-4o-mini" and record.trace["pool"] == "model 'gpt-4o-mini'"


def test_a_route_fails_over_and_each_attempt_gets_its_own_upstream_model(gateway, token, acme, upstream, fast):
    upstream.configure("oa", failure_kind="500", fail_next=1)
    with gateway.client(token) as http:
        r = http.post(COMPLETIONS, json={"prompt": "hello", "model": "fast"})
    assert r.status_code == 200, r.text
    attempts = r.json()["route"]["attempts"]
    assert [(a["provider"], a["model"], a["outcome"]) for a in attempts] == [
        ("oa", "gpt-4o", "http_500"),
        ("an", "claude-sonnet-4-20250514", "success"),
    ]
    assert upstream.requests("oa")[-1].body["model"] == "gpt-4o"
    assert upstream.requests("an")[-1].body["model"] == "claude-sonnet-4-20250514"
    (record,) = records(acme)
    assert record.model_requested == "fast" and record.trace["pool"] == "route 'fast'"
    models = {row["provider"]: row["model"] for row in record.trace["candidates"]}
    assert models == {"oa": "gpt-4o", "an": "claude-sonnet-4-20250514"}


def test_the_openai_client_asks_for_the_route_by_name(client, upstream, fast):
    upstream.configure("oa", failure_kind="503", fail_next=1)
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-axonflow-provider"] == "an"
    assert raw.parse().choices[0].message.content == "Echo: hi"


def test_models_lists_routes_served_models_and_providers(client, fast):
    names = [m.id for m in client.models.list()]
    assert names[0] == "auto" and {"fast", "gpt-4o-mini", "claude-3-5-haiku-20241022", "oa", "an"} <= set(names)


def test_an_unknown_model_is_provider_not_found_naming_it(client, upstream, fast):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-9" in caught.value.message and caught.value.body["code"] == "provider_not_found"
    assert upstream.stats() == {}


def test_images_to_a_text_only_pool_are_a_400_naming_the_feature(client, acme, upstream):
    make(acme, "plain", "custom", upstream, settings={"features": ["chat", "streaming"]})
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="plain", messages=[{"role": "user", "content": content}])
    assert caught.value.status_code == 400 and "image input" in caught.value.message
    assert caught.value.body["details"]["features"] == ["images"]
    assert upstream.stats() == {}
    assert records(acme) == []


def test_a_provider_that_cannot_serve_is_skipped_and_the_trace_says_why(client, acme, upstream):
    make(acme, "plain", "custom", upstream, settings={"features": ["chat", "streaming"]}, priority=5)
    make(acme, "vision", "openai", upstream)
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": content}])
    assert raw.headers["x-axonflow-provider"] == "vision"
    assert upstream.requests("plain") == []
    (record,) = records(acme)
    (row,) = [r for r in record.trace["candidates"] if r["provider"] == "plain"]
    assert row["excluded"] == "unsupported" and row["why"] == "cannot serve: images"
