"""`GET /api/v1/status/` and `POST /api/v1/providers/{name}/health-check/`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from providers.models import HealthResult, ProviderConfig
from routing.health import breaker, db_thread
from tenants.models import TokenScope
from tests.conftest import ApiClient, make_token
from usage.metrics import bucket_index, empty_histogram
from usage.models import MetricBucket
from usage.writer import writer as usage_writer

URL = "/api/v1/status/"
KEY = "sk-test-status-0123456789abcdef"


def add_traffic(
    as_tenant, config, minutes_ago: float, latencies: list[float], errors: int = 0, tokens=(0, 0), cost="0"
):
    histogram = empty_histogram()
    for latency in latencies:
        histogram[bucket_index(latency)] += 1
    minute = (timezone.now() - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    with as_tenant(config.tenant):
        MetricBucket.objects.create(
            tenant=config.tenant,
            provider=config,
            minute=minute,
            request_count=len(latencies),
            error_count=errors,
            latency_sum_ms=sum(latencies),
            latency_histogram=histogram,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            cost=Decimal(cost),
        )


def by_name(response) -> dict:
    assert response.status_code == 200, response.content
    return {p["name"]: p for p in response.json()["providers"]}


def test_it_lists_every_provider_with_health_last_check_and_metrics(acme_api, acme, make_provider, as_tenant):
    a = make_provider(acme, name="a", health_status="degraded", health_source="probe")
    make_provider(acme, name="idle", enabled=False)
    with as_tenant(acme):
        HealthResult.objects.create(tenant=acme, provider=a, status="degraded", latency_ms=2500.0, source="probe")
    add_traffic(as_tenant, a, 1, [40.0] * 3, errors=1, tokens=(30, 12), cost="0.0042")
    body = acme_api.get(URL).json()
    assert body["window"] == "5m"
    providers = {p["name"]: p for p in body["providers"]}
    assert set(providers) == {"a", "idle"}
    assert providers["a"]["health"]["status"] == "degraded"
    assert providers["a"]["health"]["source"] == "probe"
    assert providers["a"]["last_check"]["latency_ms"] == 2500.0
    assert providers["a"]["metrics"] == {
        "request_count": 3,
        "error_count": 1,
        "retry_count": 0,
        "avg_response_time_ms": 40.0,
        "p95_response_time_ms": 48.8,  # 25 + 25 * 2.85 / 3, in the 25-50 ms bucket
        "prompt_tokens": 30,
        "completion_tokens": 12,
        "total_tokens": 42,
        "cost": {"amount": "0.00420000", "currency": "USD"},
    }
    assert providers["idle"]["enabled"] is False
    assert providers["idle"]["health"]["status"] == "unknown"
    assert providers["idle"]["last_check"] is None
    assert providers["idle"]["metrics"]["request_count"] == 0
    assert providers["idle"]["metrics"]["avg_response_time_ms"] is None
    assert providers["idle"]["metrics"]["cost"] == {"amount": "0.00000000", "currency": "USD"}


@pytest.mark.parametrize("window, expected", [("5m", 1), ("1h", 1 + 2), ("24h", 1 + 2 + 4)])
def test_each_window_counts_only_its_own_minutes(acme_api, acme, make_provider, as_tenant, window, expected):
    a = make_provider(acme, name="a")
    add_traffic(as_tenant, a, 2, [10.0])
    add_traffic(as_tenant, a, 30, [10.0] * 2)
    add_traffic(as_tenant, a, 60 * 5, [10.0] * 4)
    add_traffic(as_tenant, a, 60 * 48, [10.0] * 8)  # outside every window
    assert by_name(acme_api.get(URL, {"window": window}))["a"]["metrics"]["request_count"] == expected


def test_p95_comes_from_the_latency_histogram(acme_api, acme, make_provider, as_tenant):
    a = make_provider(acme, name="a")
    b = make_provider(acme, name="b")
    add_traffic(as_tenant, a, 1, [40.0] * 95 + [2000.0] * 5)
    add_traffic(as_tenant, b, 1, [40.0] * 94 + [2000.0] * 6)
    providers = by_name(acme_api.get(URL))
    assert providers["a"]["metrics"]["p95_response_time_ms"] == 50.0  # top of the 25-50 ms bucket
    assert providers["b"]["metrics"]["p95_response_time_ms"] == 1250.0  # inside the 1000-2500 ms bucket
    assert providers["b"]["metrics"]["avg_response_time_ms"] == round((94 * 40 + 6 * 2000) / 100, 1)


def test_it_sums_a_providers_minutes(acme_api, acme, make_provider, as_tenant):
    a = make_provider(acme, name="a")
    add_traffic(as_tenant, a, 0, [10.0, 20.0], errors=1, tokens=(5, 5), cost="0.001")
    add_traffic(as_tenant, a, 3, [30.0], errors=1, tokens=(1, 2), cost="0.002")
    metrics = by_name(acme_api.get(URL))["a"]["metrics"]
    assert (metrics["request_count"], metrics["error_count"], metrics["total_tokens"]) == (3, 2, 13)
    assert metrics["cost"]["amount"] == "0.00300000"


@pytest.mark.django_db(transaction=True)
def test_it_shows_a_circuit_opened_by_traffic(acme_api, acme, make_provider):
    a = make_provider(acme, name="a")
    for _ in range(10):
        breaker.record_attempt(acme.pk, a.pk, False, 10.0, "HTTP 500")
    db_thread.flush()
    provider = by_name(acme_api.get(URL))["a"]
    assert (provider["health"]["status"], provider["health"]["source"]) == ("unhealthy", "traffic")
    assert provider["last_check"]["source"] == "traffic"


def test_it_says_whether_the_shared_layer_is_up(acme_api, settings):
    """Redis up when configured (CI), not configured by default; down: tests/test_redis_down.py."""
    body = acme_api.get("/api/v1/status/").json()
    configured = bool(settings.REDIS_URL)
    assert body["shared_layer"] == {"configured": configured, "up": configured, "down_since": None}


@pytest.mark.parametrize("window", ["1m", "5M", "", "24h;drop table", "x" * 500])
def test_it_rejects_an_unknown_window(acme_api, acme, make_provider, window):
    make_provider(acme, name="a")
    r = acme_api.get(URL, {"window": window})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert "5m, 1h, 24h" in error["message"]
    assert len(r.content) < 1000


def test_each_tenant_sees_only_its_own_providers(acme_api, globex_api, acme, globex, make_provider, as_tenant):
    a = make_provider(acme, name="a")
    make_provider(globex, name="g")
    add_traffic(as_tenant, a, 1, [10.0] * 7)
    assert set(by_name(acme_api.get(URL))) == {"a"}
    assert set(by_name(globex_api.get(URL))) == {"g"}


def test_it_needs_an_admin_token(acme, acme_completions_api):
    assert ApiClient(None).get(URL).status_code == 401
    assert ApiClient("axf_not-a-token").get(URL).json()["error"]["code"] == "unauthorized"
    r = acme_completions_api.get(URL)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")


@pytest.mark.parametrize("count", [1, 8])
def test_the_query_count_does_not_grow_with_providers(
    acme, make_provider, as_tenant, django_assert_max_num_queries, count
):
    api = ApiClient(make_token(acme, TokenScope.ADMIN))
    for i in range(count):
        config = make_provider(acme, name=f"p{i}")
        add_traffic(as_tenant, config, 1, [10.0])
        with as_tenant(acme):
            HealthResult.objects.create(tenant=acme, provider=config, status="healthy", latency_ms=5.0)
    with django_assert_max_num_queries(8):
        assert len(by_name(api.get(URL))) == count


# --- POST /api/v1/providers/{name}/health-check/ ---------------------------------------------------


def check_url(name: str) -> str:
    return f"/api/v1/providers/{name}/health-check/"


@pytest.fixture
def probed(acme, upstream, make_provider):
    return make_provider(acme, name="main", type="openai", base_url=upstream.base_url("main", "openai"), api_key=KEY)


def test_it_probes_now_and_returns_the_result(acme_api, probed, upstream, as_tenant):
    r = acme_api.post(check_url("main"))
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["provider"], body["status"], body["source"], body["error"]) == ("main", "healthy", "probe", "")
    assert body["latency_ms"] >= 0
    assert body["health"]["status"] == "healthy"
    assert upstream.counts("main")["probe"] == 1
    with as_tenant(probed.tenant):
        assert HealthResult.objects.filter(provider=probed, source="probe").count() == 1


def test_a_failing_probe_is_reported_and_degrades_the_provider(acme_api, probed, upstream):
    upstream.configure("main", failure_rate=1.0, failure_kind="503")
    body = acme_api.post(check_url("main")).json()
    assert body["status"] == "unhealthy"
    assert "503" in body["error"]
    assert body["health"]["status"] == "degraded"  # one failure: degraded, not yet unhealthy


def test_an_upstream_echoing_the_key_does_not_leak_it(acme_api, probed, upstream):
    upstream.configure("main", failure_rate=1.0, failure_kind="echo_key")
    r = acme_api.post(check_url("main"))
    assert r.status_code == 200
    assert KEY not in r.content.decode()


def test_an_unknown_provider_is_not_found(acme_api, probed, upstream):
    r = acme_api.post(check_url("nope"))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "provider_not_found")
    assert upstream.stats() == {}


def test_another_tenants_provider_is_not_found_and_not_probed(globex_api, probed, upstream, as_tenant):
    r = globex_api.post(check_url("main"))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "provider_not_found")
    assert upstream.stats() == {}
    with as_tenant(probed.tenant):
        assert not HealthResult.objects.filter(provider=probed).exists()
        assert ProviderConfig.objects.get(pk=probed.pk).last_checked_at is None


def test_a_completions_token_may_not_trigger_checks(acme_completions_api, probed, upstream):
    r = acme_completions_api.post(check_url("main"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    assert upstream.stats() == {}


def test_only_post_is_allowed(acme_api, probed, upstream):
    assert acme_api.get(check_url("main")).status_code == 405
    assert upstream.stats() == {}


def test_it_counts_re_sends_to_a_provider_that_had_failed_the_request(acme_api, acme, make_provider, upstream):
    make_provider(acme, name="only", base_url=upstream.base_url("only"), api_key="sk-test-only1111")
    upstream.configure("only", fail_next=1, failure_kind="503")  # fails once, then answers the re-send
    served = acme_api.post("/api/v1/completions", {"prompt": "hi"})
    assert served.status_code == 200, served.content
    assert served.json()["route"]["attempts"][1]["retry"] is True
    usage_writer.flush()
    metrics = by_name(acme_api.get(URL))["only"]["metrics"]
    assert (metrics["request_count"], metrics["error_count"], metrics["retry_count"]) == (2, 1, 1)
