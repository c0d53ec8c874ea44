"""GET /metrics, the Prometheus exposition (issue 13, Must-show 1): after a mix of served, failed-over,
rate-limited and streamed requests through the real HTTP surface and the fake upstream,
the scraped counters and histogram counts equal what happened, exactly; the
exposition parses with prometheus_client's own parser; without the token, 401.

Metric values live for the whole process, so each test compares a scrape before and
after its traffic.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from routing import cache
from tenants.models import Tenant, TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-test-token-0123456789"
CHAT = "/v1/chat/completions"


def scrape(gateway) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition: {(name, labels): value}; flushes usage first (the
    writer counts each request as it takes it off its queue)."""
    usage_writer.flush()
    with gateway.client() as client:
        r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples


def delta(before, after, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def total(before, after, name: str, **labels) -> float:
    """The change summed over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value - before.get(key, 0.0) for key, value in after.items() if key[0] == name and wanted <= set(key[1])
    )


@pytest.fixture
def metrics_on(settings):
    settings.AXONFLOW_METRICS_TOKEN = TOKEN


@pytest.fixture
def traffic(gateway, acme, make_provider, upstream, metrics_on):
    """acme: `a` (tried first for gpt-4o-mini, fails 502 twice), `b` (serves), `c`
    (another model, one request a minute); a completions token."""
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111", priority=1)
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222")
    make_provider(
        acme, name="c", model="other-model", base_url=upstream.base_url("c"), api_key="sk-test-cccc3333", rate_limit=1
    )
    upstream.configure("a", failure_kind="502", fail_next=2)
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        assert client.get("/v1/models").status_code == 200
        yield client


def chat(client, model: str, stream: bool = False):
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    if not stream:
        return client.post(CHAT, json=body)
    with client.stream("POST", CHAT, json=body) as r:
        r.read()
        return r


def test_the_scraped_counters_equal_what_happened(gateway, traffic, acme, upstream):
    before = scrape(gateway)
    served = [chat(traffic, "b") for _ in range(3)]
    failed_over = [chat(traffic, "gpt-4o-mini") for _ in range(2)]
    streamed = [chat(traffic, "b", stream=True) for _ in range(2)]
    limited = [chat(traffic, "c") for _ in range(2)]  # the first takes c's one request a minute
    assert [r.status_code for r in served + failed_over + streamed] == [200] * 7
    assert [r.status_code for r in limited] == [200, 429]
    assert [r.headers["x-axonflow-provider"] for r in failed_over] == ["b", "b"]
    assert upstream.counts("a")["failed"] == 2
    after = scrape(gateway)

    def requests(**labels):
        return delta(before, after, "axonflow_requests_total", tenant="acme", endpoint="chat", **labels)

    assert requests(model="b", provider="b", outcome="success") == 5
    assert requests(model="gpt-4o-mini", provider="b", outcome="success") == 2
    assert requests(model="c", provider="c", outcome="success") == 1
    assert requests(model="c", provider="none", outcome="rate_limited") == 1
    assert total(before, after, "axonflow_requests_total") == 9

    def attempts(provider, outcome, error_class):
        return delta(before, after, "axonflow_attempts_total", tenant="acme", provider=provider, outcome=outcome,
                     error_class=error_class)  # fmt: skip

    assert attempts("a", "failure", "server_error") == 2
    assert attempts("b", "success", "none") == 7
    assert attempts("c", "success", "none") == 1
    assert attempts("c", "skipped", "rate_limited") == 1
    assert total(before, after, "axonflow_attempts_total") == 11
    assert delta(before, after, "axonflow_failovers_total", tenant="acme", provider="a") == 2
    assert total(before, after, "axonflow_failovers_total") == 2
    assert total(before, after, "axonflow_retries_total") == 0
    assert delta(before, after, "axonflow_rejections_total", tenant="acme", endpoint="chat", reason="rate_limited") == 1

    # Histograms: one observation per request (end to end), per upstream call, per stream
    # (first token) and per non-streaming request that reached an upstream (overhead).
    def count(name, **labels):
        return delta(before, after, f"{name}_count", **labels)

    assert count("axonflow_request_duration_seconds", tenant="acme", endpoint="chat", provider="b") == 7
    assert count("axonflow_request_duration_seconds", tenant="acme", endpoint="chat", provider="c") == 1
    assert count("axonflow_request_duration_seconds", tenant="acme", endpoint="chat", provider="none") == 1
    assert count("axonflow_upstream_duration_seconds", tenant="acme", provider="a", outcome="failure") == 2
    assert count("axonflow_upstream_duration_seconds", tenant="acme", provider="b", outcome="success") == 7
    assert count("axonflow_time_to_first_token_seconds", tenant="acme", provider="b") == 2
    assert count("axonflow_overhead_seconds", endpoint="chat") == 6
    # The +Inf bucket of a histogram is its count.
    assert delta(before, after, "axonflow_request_duration_seconds_bucket", tenant="acme", endpoint="chat",
                 provider="b", le="+Inf") == 7  # fmt: skip

    # Tokens and cost equal the usage records'.
    with tenant_context(acme.pk):
        records = list(UsageRecord.objects.filter(tenant=acme))
    assert len(records) == 9
    by_provider = defaultdict(lambda: [0, 0, 0.0])
    for record in records:
        if record.status == "success":
            by_provider[record.provider_name][0] += record.prompt_tokens
            by_provider[record.provider_name][1] += record.completion_tokens
            by_provider[record.provider_name][2] += float(record.cost)
    for provider, (prompt, completion, cost) in by_provider.items():
        assert delta(before, after, "axonflow_tokens_total", tenant="acme", provider=provider, direction="input") == prompt
        assert delta(before, after, "axonflow_tokens_total", tenant="acme", provider=provider, direction="output") == completion
        assert delta(before, after, "axonflow_cost_usd_total", tenant="acme", provider=provider) == pytest.approx(cost)
    assert by_provider["b"][1] > 0

    # The end-to-end sum is the records' latencies.
    latency = sum(r.latency_ms for r in records if r.provider_name == "b") / 1000
    assert delta(before, after, "axonflow_request_duration_seconds_sum", tenant="acme", endpoint="chat",
                 provider="b") == pytest.approx(latency, abs=1e-3)  # fmt: skip


def test_the_tenant_rate_limit_counts_as_a_rejection(gateway, acme, make_provider, upstream, metrics_on):
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222")
    Tenant.objects.filter(pk=acme.pk).update(api_rate_limit=2)
    cache.invalidate_tenant(acme.pk)
    before = scrape(gateway)
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        statuses = [chat(client, "b").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    after = scrape(gateway)
    assert delta(before, after, "axonflow_rejections_total", tenant="acme", endpoint="chat", reason="rate_limited") == 2
    # Refused before routing: no routed request, no attempt.
    assert total(before, after, "axonflow_requests_total") == 2
    assert total(before, after, "axonflow_attempts_total") == 2


def test_provider_states_are_gauges(gateway, acme, make_provider, upstream, metrics_on):
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222", health_status="healthy")
    make_provider(acme, name="d", base_url=upstream.base_url("d"), enabled=False, operator_state="drained")
    samples = scrape(gateway)

    def value(name, **labels):
        return samples[name, frozenset({"tenant": "acme", **labels}.items())]

    assert value("axonflow_provider_health", provider="b", status="healthy") == 1
    assert value("axonflow_provider_health", provider="b", status="unhealthy") == 0
    assert value("axonflow_provider_circuit", provider="b", state="closed") == 1
    assert value("axonflow_provider_operator_state", provider="d", state="drained") == 1
    assert value("axonflow_provider_operator_state", provider="b", state="none") == 1
    assert value("axonflow_provider_enabled", provider="d") == 0
    for gauge in ("axonflow_in_flight_requests", "axonflow_in_flight_streams", "axonflow_usage_queue_depth"):
        assert (gauge, frozenset()) in samples
    assert samples["axonflow_in_flight_requests", frozenset()] >= 0


def test_without_the_token_it_is_401_and_shows_nothing(gateway, metrics_on):
    with gateway.client() as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
            assert "axonflow_" not in r.text
            assert r.headers["www-authenticate"].startswith("Bearer")


def test_with_no_token_configured_there_is_no_metrics_endpoint(gateway, settings):
    settings.AXONFLOW_METRICS_TOKEN = ""
    with gateway.client() as client:
        r = client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 404
    assert "AXONFLOW_METRICS_TOKEN" in r.json()["error"]["message"]


def test_no_client_input_creates_a_series(gateway, traffic, upstream):
    """An unknown model is refused before routing; a client's request id, path or
    header never becomes a label value."""
    before = scrape(gateway)
    r = traffic.post(CHAT, json={"model": "made-up-model-x1", "messages": [{"role": "user", "content": "hi"}]},
                     headers={"X-Request-ID": "client-chosen-id-777"})  # fmt: skip
    assert r.status_code == 404
    traffic.post("/v1/not-a-path-y2", json={})
    after = scrape(gateway)
    text = json.dumps([sorted(k[1]) for k in after])
    for made_up in ("made-up-model-x1", "client-chosen-id-777", "not-a-path-y2"):
        assert made_up not in text
    assert set(after) - set(before) <= {k for k in after if k[0].startswith(("axonflow_provider_", "python_", "process_"))}
