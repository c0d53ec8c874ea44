"""The request log (console:requests): filters, totals, keyset pages, htmx fragments, and
each request's routing trace (console:request_detail)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from tenants.models import ApiToken, TokenScope
from tests.conftest import make_token
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

LOG = reverse("console:requests")
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

TRACE = {
    "pool": "all providers",
    "options": {"preferred_provider": None, "weights": {"fast-one": 80.0}, "disable_failover": False},
    "candidates": [
        {"provider": "fast-one", "priority": 0, "weight": 50, "weight_used": 80.0, "status": "healthy",
         "operator_state": "", "excluded": None, "why": ""},
        {"provider": "slow-one", "priority": 0, "weight": 50, "weight_used": 25.0, "status": "degraded",
         "operator_state": "", "excluded": None, "why": ""},
        {"provider": "drained-one", "priority": 0, "weight": 50, "weight_used": None, "status": "healthy",
         "operator_state": "drained", "excluded": "drained", "why": "drained by an operator"},
        {"provider": "off-one", "priority": 0, "weight": 50, "weight_used": None, "status": "unknown",
         "operator_state": "", "excluded": "disabled", "why": "disabled"},
    ],
    "draw": {"method": "weighted", "among": [{"provider": "fast-one", "weight": 80.0},
                                             {"provider": "slow-one", "weight": 25.0}],
             "total": 105.0, "point": 91.5, "chosen": "slow-one"},
}  # fmt: skip


@pytest.fixture
def log(acme, globex, make_provider, as_tenant):
    """60 acme records, newest has the trace above; one globex record."""
    a = make_provider(acme, name="fast-one", api_key="sk-live-SECRET-0123456789")
    token, _raw = ApiToken.issue(acme, "billing-app", TokenScope.COMPLETIONS)
    with as_tenant(acme):
        UsageRecord.objects.bulk_create(
            [
                UsageRecord(
                    tenant=acme, provider=a, provider_name="fast-one" if i % 2 else "slow-one",
                    status="error" if i % 10 == 0 else "success", status_code=502 if i % 10 == 0 else 200,
                    error_code="upstream_error" if i % 10 == 0 else "", model="gpt-4o-mini",
                    model_requested="fast" if i % 3 == 0 else "", token=token if i % 2 else None,
                    request_id=f"req-{i:03d}", prompt_tokens=10, completion_tokens=5, total_tokens=15,
                    cost=Decimal("0.0001"), latency_ms=200, attempt_count=1,
                    attempts=[{"provider": "fast-one", "outcome": "success", "status_code": 200, "latency_ms": 200.0,
                               "error": ""}],
                    created=T0 + timedelta(minutes=i), endpoint="embeddings" if i % 20 == 1 else "chat",
                )
                for i in range(59)
            ]
        )  # fmt: skip
        traced = UsageRecord.objects.create(
            tenant=acme, provider=a, provider_name="slow-one", status="success", model="gpt-4o-mini",
            model_requested="fast", request_id="req-traced", attempt_count=2, prompt_tokens=12, completion_tokens=30,
            total_tokens=42, cost=Decimal("0.00042"), latency_ms=321.5, token=token, created=T0 + timedelta(hours=2),
            attempts=[
                {"provider": "slow-one", "outcome": "http_503", "status_code": 503, "latency_ms": 20.0,
                 "error": "upstream said 503 Service Unavailable"},
                {"provider": "fast-one", "outcome": "success", "status_code": 200, "latency_ms": 300.0, "error": ""},
            ],
            trace=TRACE,
        )  # fmt: skip
    g = make_provider(globex, name="globex-only")
    with as_tenant(globex):
        UsageRecord.objects.create(tenant=globex, provider=g, provider_name="globex-only", status="success")
    return traced


def ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="request-(\d+)"', html)]


def test_the_log_lists_the_newest_requests_with_totals_and_links_to_each_trace(bob_client, log):
    r = bob_client.get(LOG)
    assert r.status_code == 200
    html = r.content.decode()
    ids = ids_on(html)
    assert len(ids) == 50 and ids[0] == log.pk
    assert reverse("console:request_detail", args=[log.pk]) in html
    assert 'data-total="requests">60<' in html and 'data-total="errors">6<' in html
    assert 'data-total="tokens">' in html and "billing-app" in html
    assert "globex-only" not in html
    assert "Older →" in html and "← Newer" not in html


def test_older_and_newer_walk_the_log_by_cursor(bob_client, log):
    first = bob_client.get(LOG).content.decode()
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "cursor=" in older
    second = bob_client.get(LOG + older).content.decode()
    assert len(ids_on(second)) == 10 and not set(ids_on(second)) & set(ids_on(first))
    assert "Older →" not in second
    newer = re.search(r'rel="prev" href="([^"]+)"', second).group(1).replace("&amp;", "&")
    assert ids_on(bob_client.get(LOG + newer).content.decode()) == ids_on(first)


def test_paging_keeps_the_filters(bob_client, log):
    first = bob_client.get(LOG, {"provider": "fast-one", "limit": "20"}).content.decode()
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "provider=fast-one" in older
    second = bob_client.get(LOG + older).content.decode()
    assert 'data-total="requests">29<' in second and len(ids_on(second)) == 9


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({"provider": "fast-one"}, 29),
        ({"status": "error"}, 6),
        ({"model": "fast"}, 21),
        ({"request_id": "req-007"}, 1),
        ({"endpoint": "embeddings"}, 3),
        ({"endpoint": "messages"}, 0),
        ({"since": "2026-11-01T12:50"}, 10),
        ({"since": "2026-11-01T12:00", "until": "2026-11-01T12:10:00"}, 10),
        ({"provider": "", "status": "", "model": "", "token": "", "since": "", "until": "", "request_id": ""}, 60),
    ],
)
def test_filters_narrow_rows_and_totals(bob_client, log, params, count):
    html = bob_client.get(LOG, params).content.decode()
    assert f'data-total="requests">{count}<' in html
    assert len(ids_on(html)) == min(count, 50)


def test_a_row_names_its_endpoint_unless_it_is_chat(bob_client, log):
    html = bob_client.get(LOG, {"request_id": "req-001"}).content.decode()
    assert "(embeddings)" in html and 'option value="embeddings"' in html
    assert "(chat)" not in bob_client.get(LOG, {"request_id": "req-002"}).content.decode()


def test_the_token_filter_takes_the_tokens_id(bob_client, log, acme):
    token = ApiToken.objects.get(tenant=acme, name="billing-app")
    html = bob_client.get(LOG, {"token": token.pk}).content.decode()
    assert 'data-total="requests">30<' in html


def test_htmx_gets_the_rows_fragment_not_the_layout(bob_client, log):
    r = bob_client.get(LOG, {"status": "error"}, headers={"HX-Request": "true"})
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html and "<form" not in html
    assert 'data-total="requests">6<' in html


@pytest.mark.parametrize(
    "query",
    [
        "limit=²",
        "since=yesterday",
        "status=ok",
        "cursor=nonsense",
        "colour=red",
        "provider=a%00",
        "until=0001-01-01T00:00%2B05:00",
    ],
)
def test_garbage_parameters_show_the_error_not_a_500(bob_client, log, query):
    r = bob_client.get(f"{LOG}?{query}")
    assert r.status_code == 400
    assert 'class="form-errors"' in r.content.decode() and ids_on(r.content.decode()) == []
    htmx = bob_client.get(f"{LOG}?{query}", headers={"HX-Request": "true"})
    assert htmx.status_code == 200 and 'role="alert"' in htmx.content.decode()  # htmx swaps only 2xx


def test_an_empty_log_says_so(bob_client, acme):
    assert "No requests match." in bob_client.get(LOG).content.decode()


def test_the_log_runs_a_bounded_number_of_queries(bob_client, log, django_assert_max_num_queries):
    with django_assert_max_num_queries(16):
        bob_client.get(LOG)
    with django_assert_max_num_queries(16):
        bob_client.get(LOG, {"provider": "fast-one", "status": "success"})


def test_the_trace_answers_why_the_request_went_where_it_went(bob_client, log):
    r = bob_client.get(reverse("console:request_detail", args=[log.pk]))
    assert r.status_code == 200
    html = r.content.decode()
    # the pool and each candidate with priority, weights, health, state and verdict
    assert "pool: all providers" in html
    for name in ("fast-one", "slow-one", "drained-one", "off-one"):
        assert f'data-provider="{name}"' in html
    assert "excluded: drained by an operator" in html and "excluded: disabled" in html
    assert re.search(r'<tr class="excluded" data-provider="drained-one">', html)
    assert re.search(r'<tr class="chosen" data-provider="slow-one">', html)
    # the draw: method, among with shares and ranges, total, point, chosen
    assert "<code>weighted</code>" in html and "91.5" in html and "105.0" in html
    assert "fast-one</strong> weight 80.0 (76.2%)" in html and "covers 80.0–105.0" in html
    assert "<strong>slow-one</strong> was tried first: a random draw in proportion to weight" in html
    # the options, then every attempt with its status, latency and error
    assert "fast-one: 80.0" in html
    assert "http_503" in html and "upstream said 503 Service Unavailable" in html and "300.0 ms" in html
    assert "12 prompt + 30 completion = 42" in html and "0.00042000" in html
    assert "sk-live-SECRET" not in html


def test_a_record_without_a_trace_says_no_trace_recorded(bob_client, acme, as_tenant):
    with as_tenant(acme):
        record = UsageRecord.objects.create(tenant=acme, status="success", provider_name="x")
    html = bob_client.get(reverse("console:request_detail", args=[record.pk])).content.decode()
    assert "No trace recorded." in html


def test_the_prompt_shows_only_when_it_was_stored(bob_client, acme, as_tenant, log):
    html = bob_client.get(reverse("console:request_detail", args=[log.pk])).content.decode()
    assert "Prompt (stored" not in html
    with as_tenant(acme):
        record = UsageRecord.objects.create(tenant=acme, status="success", prompt="user: hello secret plan")
    html = bob_client.get(reverse("console:request_detail", args=[record.pk])).content.decode()
    assert "Prompt (stored" in html and "hello secret plan" in html


def test_another_tenants_admin_sees_neither_the_rows_nor_the_trace(carol_client, log):
    html = carol_client.get(LOG).content.decode()
    assert 'data-total="requests">1<' in html and "fast-one" not in html
    assert carol_client.get(reverse("console:request_detail", args=[log.pk])).status_code == 404


def test_a_missing_record_is_404(bob_client, log):
    assert bob_client.get(reverse("console:request_detail", args=[log.pk + 1000])).status_code == 404
    assert bob_client.get(f"{LOG}{'9' * 30}/").status_code == 404


def test_anonymous_users_are_sent_to_log_in(client, log):
    r = client.get(LOG)
    assert r.status_code == 302 and "login" in r["Location"]


@pytest.mark.django_db(transaction=True)
def test_a_routed_request_leaves_a_trace_naming_the_excluded_providers_and_the_draw(
    gateway, acme, alice, make_provider, upstream, as_tenant
):
    """Through the real stack: POST /api/v1/completions, the usage writer, then the
    record's trace via the API and the console."""
    from tests.console.conftest import logged_in

    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111", weight=70)
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222", weight=30)
    make_provider(acme, name="off", base_url=upstream.base_url("off"), enabled=False)
    make_provider(acme, name="down", base_url=upstream.base_url("down"), health_status="unhealthy")
    make_provider(acme, name="parked", base_url=upstream.base_url("parked"), operator_state="drained",
                  operator_reason="maintenance")  # fmt: skip
    with gateway.client(make_token(acme)) as api:
        r = api.post("/api/v1/completions", json={"prompt": "hello", "weights": {"b": 0}})
        assert r.status_code == 200 and r.json()["provider"] == "a"
        usage_writer.flush()
        with as_tenant(acme):
            record = UsageRecord.objects.get(tenant=acme, request_id=r.headers["X-Request-Id"])
        detail = api.get(f"/api/v1/usage/{record.pk}/").json()
    trace = detail["trace"]
    excluded = {c["provider"]: c["excluded"] for c in trace["candidates"]}
    assert excluded == {"a": None, "b": None, "off": "disabled", "down": "unhealthy", "parked": "drained"}
    assert trace["draw"]["method"] == "weighted" and trace["draw"]["chosen"] == "a"
    assert trace["draw"]["among"] == [{"provider": "a", "weight": 70.0}]  # b weighted 0 by the request: standby
    assert trace["options"]["weights"] == {"b": 0.0}
    html = logged_in(alice).get(reverse("console:request_detail", args=[record.pk])).content.decode()
    assert "excluded: drained by an operator" in html and "excluded: unhealthy" in html and "excluded: disabled" in html
    assert "sk-test-aaaa1111" not in html
