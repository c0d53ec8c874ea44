"""POST /api/v1/completions over real HTTP (uvicorn), routed to the fake upstream through
the real OpenAI adapter."""

from __future__ import annotations

import json

import pytest

from routing.health import breaker, status
from tenants.models import TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/completions"


@pytest.fixture
def api(gateway, acme):
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        yield client


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def records(tenant, as_tenant) -> list[UsageRecord]:
    usage_writer.flush()
    with as_tenant(tenant):
        return list(UsageRecord.objects.filter(tenant=tenant).order_by("created", "pk"))


def test_it_routes_a_prompt_and_returns_the_route(api, two, upstream):
    r = api.post(URL, json={"prompt": "hello"})
    assert r.status_code == 200
    body = r.json()
    assert body["content"] == "Echo: hello"
    assert body["provider"] == "a" and r.headers["X-AxonFlow-Provider"] == "a"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
    assert body["cost"]["currency"] == "USD" and float(body["cost"]["amount"]) > 0
    assert body["route"]["provider_name"] == "a"
    assert [a["outcome"] for a in body["route"]["attempts"]] == ["success"]
    assert upstream.counts("a")["chat"] == 1


def test_messages_system_and_options_reach_the_upstream(api, two, upstream):
    two[0].models = ["gpt-4o"]  # "a" serves gpt-4o besides its default model (SPEC §2 rule 0)
    with tenant_context(two[0].tenant_id):
        two[0].save()
    r = api.post(
        URL,
        json={
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "max_tokens": 7,
            "temperature": 0.2,
            "stop": ["END"],
            "model": "gpt-4o",
        },
    )
    assert r.status_code == 200
    sent = upstream.last("a").body
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["messages"][-1] == {"role": "user", "content": "hi"}
    assert sent["temperature"] == 0.2 and sent["stop"] == ["END"] and sent["model"] == "gpt-4o"
    assert r.json()["route"]["attempts"][0]["model"] == "gpt-4o"


def test_a_model_nothing_serves_is_provider_not_found_and_nothing_is_sent(api, two, upstream):
    r = api.post(URL, json={"prompt": "hi", "model": "gpt-9"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "provider_not_found" and r.json()["error"]["details"]["name"] == "gpt-9"
    assert upstream.stats() == {}


def test_every_request_succeeds_through_the_other_provider_when_one_always_fails(api, two, upstream, acme, as_tenant):
    upstream.configure("a", failure_rate=1.0, failure_kind="500")
    for _ in range(8):  # fewer than the circuit breaker's minimum sample: `a` is tried every time
        r = api.post(URL, json={"prompt": "hello"})
        assert r.status_code == 200
        attempts = r.json()["route"]["attempts"]
        assert [(a["provider"], a["outcome"]) for a in attempts] == [("a", "http_500"), ("b", "success")]
        assert attempts[0]["status_code"] == 500
    assert upstream.counts("b")["chat"] == 8
    rows = records(acme, as_tenant)
    assert [(row.provider_name, row.status, row.providers_tried) for row in rows] == [("b", "success", ["a", "b"])] * 8


def test_disable_failover_with_the_failing_provider_preferred_gives_502_with_the_attempt(api, two, upstream):
    upstream.configure("b", failure_rate=1.0, failure_kind="503")
    r = api.post(URL, json={"prompt": "hi", "preferred_provider": "b", "disable_failover": True})
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "upstream_error"
    assert [(a["provider"], a["outcome"], a["status_code"]) for a in error["details"]["attempts"]] == [
        ("b", "http_503", 503)
    ]
    assert upstream.counts("a") == {}


def test_a_non_retryable_upstream_error_returns_at_once(api, two, upstream):
    upstream.configure("a", failure_rate=1.0, failure_kind="400")
    r = api.post(URL, json={"prompt": "hi"})
    assert r.status_code == 502
    assert [a["provider"] for a in r.json()["error"]["details"]["attempts"]] == ["a"]
    assert upstream.counts("b") == {}


def test_all_providers_failing_gives_502_listing_every_attempt(api, two, upstream):
    upstream.configure("*", failure_rate=1.0, failure_kind="502")
    r = api.post(URL, json={"prompt": "hi"})
    assert r.status_code == 502
    # each once, then each re-sent once (no other candidate was left)
    assert [a["outcome"] for a in r.json()["error"]["details"]["attempts"]] == ["http_502"] * 4


def test_every_provider_answering_429_gives_429_with_the_shortest_retry_after(api, two, upstream):
    upstream.configure("a", failure_rate=1.0, failure_kind="429", retry_after="30")
    upstream.configure("b", failure_rate=1.0, failure_kind="429", retry_after="7")
    r = api.post(URL, json={"prompt": "hi"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert r.headers["Retry-After"] == "7"
    # Retry-After beyond the policy's longest wait (2 s): not re-sent, and skipped meanwhile.
    assert [a["outcome"] for a in r.json()["error"]["details"]["attempts"]] == ["http_429", "http_429"]
    again = api.post(URL, json={"prompt": "hi"})
    assert again.status_code == 429 and again.json()["error"]["details"]["attempts"] == []
    assert upstream.counts("a")["chat"] == upstream.counts("b")["chat"] == 1


def test_the_preferred_provider_goes_first(api, two, upstream):
    for _ in range(3):
        assert api.post(URL, json={"prompt": "hi", "preferred_provider": "b"}).json()["provider"] == "b"
    assert upstream.counts("a") == {}


def test_request_weights_override_the_defaults(api, acme, make_provider, upstream):
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111", weight=100)
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222", weight=1)
    for _ in range(5):
        assert api.post(URL, json={"prompt": "hi", "weights": {"a": 0, "b": 50}}).json()["provider"] == "b"


def test_no_eligible_provider_gives_503(api, acme, make_provider, upstream):
    make_provider(acme, name="down", base_url=upstream.base_url("down"), health_status="unhealthy")
    make_provider(acme, name="off", base_url=upstream.base_url("off"), enabled=False)
    r = api.post(URL, json={"prompt": "hi"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_provider"
    assert upstream.stats() == {}


def test_every_provider_over_its_rate_limit_gives_429_with_retry_after(api, acme, make_provider, upstream):
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111", rate_limit=1)
    assert api.post(URL, json={"prompt": "hi"}).status_code == 200
    r = api.post(URL, json={"prompt": "hi"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    assert upstream.counts("a")["chat"] == 1


def test_it_streams_server_sent_events(api, two, upstream, acme, as_tenant):
    r = api.post(URL, json={"prompt": "hello there", "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["X-AxonFlow-Provider"] == "a"
    events = sse_events(r.text)
    assert "".join(data["delta"] for name, data in events if name == "chunk") == "Echo: hello there"
    name, done = events[-1]
    assert name == "done"
    assert done["provider"] == "a" and done["usage"]["completion_tokens"] > 0
    assert done["route"]["attempts"][0]["outcome"] == "success"
    assert [row.stream for row in records(acme, as_tenant)] == [True]


def test_a_stream_fails_over_before_its_first_byte(api, two, upstream):
    upstream.configure("a", failure_rate=1.0, failure_kind="500")
    r = api.post(URL, json={"prompt": "hello", "stream": True})
    assert r.status_code == 200 and r.headers["X-AxonFlow-Provider"] == "b"
    done = sse_events(r.text)[-1][1]
    assert [a["outcome"] for a in done["route"]["attempts"]] == ["http_500", "success"]


def test_a_stream_broken_after_its_first_chunk_ends_with_an_error_event(api, two, upstream, acme, as_tenant):
    upstream.configure("a", failure_rate=1.0, failure_kind="cut", cut_after=2)
    r = api.post(URL, json={"prompt": "one two three four five six", "stream": True})
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[0][0] == "chunk"
    name, data = events[-1]
    assert name == "error" and data["error"]["code"] == "upstream_error"
    assert upstream.counts("b") == {}  # no failover once bytes went out
    assert [row.status for row in records(acme, as_tenant)] == ["error"]


def test_a_stream_that_cannot_start_gets_a_plain_error_response(api, acme, make_provider, upstream):
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111")
    upstream.configure("a", failure_rate=1.0, failure_kind="500")
    r = api.post(URL, json={"prompt": "hi", "stream": True})
    assert r.status_code == 502 and r.headers["content-type"] == "application/json"


def test_usage_is_recorded_with_tokens_cost_and_token(api, two, acme, as_tenant):
    body = api.post(URL, json={"prompt": "hello"}).json()
    (row,) = records(acme, as_tenant)
    assert row.provider_name == "a" and row.status == "success" and row.status_code == 200
    assert row.total_tokens == body["usage"]["total_tokens"]
    assert str(row.cost.normalize()) == str(__import__("decimal").Decimal(body["cost"]["amount"]).normalize())
    assert row.token is not None and row.token.name == "test"
    assert row.prompt is None


def test_prompts_are_stored_only_when_the_tenant_opts_in(api, two, acme, as_tenant):
    acme.store_prompts = True
    acme.save()
    api.post(URL, json={"prompt": "remember me", "system": "sys"})
    assert [row.prompt for row in records(acme, as_tenant)] == ["system: sys\nuser: remember me"]


def test_an_admin_scope_token_may_complete_too(gateway, acme, two):
    with gateway.client(make_token(acme, TokenScope.ADMIN)) as client:
        assert client.post(URL, json={"prompt": "hi"}).status_code == 200


@pytest.mark.parametrize("auth", [None, "Bearer nope", "Basic abc", "Bearer"])
def test_without_a_valid_token_it_is_401(gateway, two, upstream, auth):
    headers = {"Authorization": auth} if auth else {}
    with gateway.client() as client:
        r = client.post(URL, json={"prompt": "hi"}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert upstream.stats() == {}


def test_a_revoked_token_is_refused_at_once(gateway, acme, two):
    from django.utils import timezone

    from tenants.models import ApiToken

    raw = make_token(acme, TokenScope.COMPLETIONS, "revoke-me")
    with gateway.client(raw) as client:
        assert client.post(URL, json={"prompt": "hi"}).status_code == 200
        token = ApiToken.objects.get(name="revoke-me")
        token.revoked_at = timezone.now()
        token.save()
        assert client.post(URL, json={"prompt": "hi"}).status_code == 401


def test_carol_cannot_route_to_acmes_providers(gateway, globex, two, upstream, acme, as_tenant):
    with gateway.client(make_token(globex)) as client:
        r = client.post(URL, json={"prompt": "hi", "preferred_provider": "a"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
        r = client.post(URL, json={"prompt": "hi"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_provider"
    assert upstream.stats() == {}
    assert records(acme, as_tenant) == []


BAD_INPUT = [
    (b"{oops", 400, "prompt"),
    (b"[]", 400, None),
    (b'"just a string"', 400, None),
    ({}, 400, "prompt"),
    ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, 400, "prompt"),
    ({"prompt": 5}, 400, "prompt"),
    ({"messages": "hi"}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": 1}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hi", "extra": 1}]}, 400, "messages"),
    ({"messages": [{"role": "system", "content": "alone"}]}, 400, "messages"),
    ({"prompt": "hi", "max_tokens": "10"}, 400, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 1.5}, 400, "max_tokens"),
    ({"prompt": "hi", "temperature": "warm"}, 400, "temperature"),
    ({"prompt": "hi", "temperature": 2.5}, 400, "temperature"),
    ({"prompt": "hi", "top_p": -0.1}, 400, "top_p"),
    ({"prompt": "hi", "stop": 1}, 400, "stop"),
    ({"prompt": "hi", "stop": ["x"] * 17}, 400, "stop"),
    ({"prompt": "hi", "stream": "yes"}, 400, "stream"),
    ({"prompt": "hi", "stream": 1}, 400, "stream"),
    ({"prompt": "hi", "weights": {"a": -5}}, 400, "weights"),
    ({"prompt": "hi", "weights": {"a": 500}}, 400, "weights"),
    ({"prompt": "hi", "weights": {"a": "ten"}}, 400, "weights"),
    ({"prompt": "hi", "weights": ["a"]}, 400, "weights"),
    ({"prompt": "hi", "weights": {"ghost": 10}}, 400, "weights"),
    ({"prompt": "hi", "preferred_provider": "ghost"}, 400, "preferred_provider"),
    ({"prompt": "hi", "preferred_provider": 3}, 400, "preferred_provider"),
    ({"prompt": "hi", "disable_failover": "true"}, 400, "disable_failover"),
    ({"prompt": "hi", "model": ["gpt"]}, 400, "model"),
    ({"prompt": "hi", "surprise": True}, 400, "surprise"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_INPUT)
def test_bad_input_gets_a_4xx_envelope_and_changes_nothing(api, two, upstream, acme, as_tenant, body, status, field):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = api.post(URL, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == "validation_error" and error["message"]
    if field and not isinstance(body, bytes):
        assert field in json.dumps(error["details"])
    assert upstream.stats() == {}
    assert records(acme, as_tenant) == []


def test_a_body_over_the_limit_is_refused_with_413(api, two, upstream, settings):
    r = api.post(URL, json={"prompt": "x" * (settings.AXONFLOW_MAX_BODY_BYTES + 10)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"  # SPEC §3 (issue 10)
    assert upstream.stats() == {}


def test_a_non_json_body_is_refused(api, two, upstream):
    r = api.post(URL, content=b"prompt=hi", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "validation_error"
    assert upstream.stats() == {}


@pytest.mark.django_db(transaction=False)
def test_with_warm_caches_a_completion_runs_no_query(
    acme_completions_api, acme, make_provider, upstream, django_assert_num_queries, settings
):
    from routing import cache

    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111")
    breaker.remember_thresholds(acme.pk, status.DEFAULT_THRESHOLDS)  # keep its background load out of the count
    cache.invalidate_all()
    # Cold: the token; then, in one RLS transaction (a savepoint inside the test's, plus
    # set_config on PostgreSQL), the tenant, its providers, its model routes with their
    # targets (one join, for SPEC §2 rule 0) and its budgets. last_used is stamped later
    # by the usage writer, off the request path. On PostgreSQL, nested in the test's own
    # transaction, tenant_context also reads and restores the outer tenant (two queries
    # a server, with no outer transaction there, does not make).
    with django_assert_num_queries(10 if settings.IS_POSTGRES else 7):
        assert acme_completions_api.post(URL, {"prompt": "hi"}).status_code == 200
    with django_assert_num_queries(0):
        for _ in range(3):
            assert acme_completions_api.post(URL, {"prompt": "hi"}).status_code == 200


def test_the_api_keeps_the_security_headers_and_the_console_its_full_middleware(api, two, gateway):
    r = api.post(URL, json={"prompt": "hi"})
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "set-cookie" not in r.headers  # no session or CSRF machinery on the token API
    with gateway.client() as browser:
        page = browser.get("/login/")
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY" and "csrftoken" in page.headers["set-cookie"]
