"""Random faults at volume, through the real HTTP surface (uvicorn, /v1/chat/completions):
three providers, two of which fail half their requests with a random mix of fast
faults (the fake upstream's `failure_kinds`), one healthy. Every one of 1,000 requests
(a fifth of them streamed) must succeed, and the usage records must account for every
request and every attempt: as many attempts on each provider as the fake upstream
counted calls, as many failed ones as it injected faults, and the per-minute metric
buckets agreeing.

Run twice: with the defaults, where the failing providers soon get little or no
traffic (a 401 opens a circuit at once, a 50 % error share soon opens the other, and
each 429's Retry-After keeps its provider out of every request for a second): the
accounting must still match; and with the breaker held closed and Retry-After at 0,
so that failover carries the whole load and every kind of fault comes up.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import httpx
import pytest

from providers.models import ProviderConfig
from routing.health import breaker
from tenants.models import Tenant, TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from usage.models import MetricBucket, UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 1000
CONCURRENCY = 20
STREAMED_SHARE = 0.2
FAILURE_RATE = 0.5
# Faults that fail at once. A streamed request meets the same providers, so every kind
# strikes before a stream's first byte (a fault after it ends that stream, by design, with
# an error: tests/test_faults_gateway.py); "malformed" (a broken JSON body) is one only
# for whole answers and is left out, missing_fields stands for it.
KINDS = {
    "flaky-openai": ["500", "502", "429", "missing_fields", "reset"],
    "flaky-anthropic": ["503", "529", "429", "missing_fields", "reset", "500"],
}
# A 401 opens the provider's circuit at once, whatever the error share: only where the
# breaker is allowed to act.
REVOKED_KEY = "401"
HELD_CLOSED = {"traffic_error_rate": 1.0, "traffic_sample_size": 1000, "traffic_min_requests": 1000}


@pytest.fixture
def providers(acme, make_provider, upstream):
    """The two flaky providers and the healthy one, all of equal priority and weight:
    {name: id}."""
    make_provider(acme, name="flaky-openai", base_url=upstream.base_url("flaky-openai"), api_key="sk-test-flaky1111")
    make_provider(
        acme, name="flaky-anthropic", type="anthropic", base_url=upstream.base_url("flaky-anthropic", "anthropic"),
        api_key="sk-ant-test-flaky2222",
    )  # fmt: skip
    make_provider(acme, name="good", base_url=upstream.base_url("good"), api_key="sk-test-good3333")
    with tenant_context(acme.pk):
        return dict(ProviderConfig.objects.filter(tenant=acme).values_list("name", "pk"))


async def send_all(url: str, token: str) -> list[tuple[int, str, bool, str]]:
    """(status, request id, streamed, answer text) of REQUESTS requests, CONCURRENCY at a time."""
    rng = random.Random(7)
    plan = [rng.random() < STREAMED_SHARE for _ in range(REQUESTS)]
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as client:

        async def one(i: int, stream: bool) -> tuple[int, str, bool, str]:
            body = {"model": "auto", "messages": [{"role": "user", "content": f"request {i}"}], "stream": stream}
            async with gate:
                if not stream:
                    r = await client.post("/v1/chat/completions", json=body)
                    text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
                    return r.status_code, r.headers.get("x-request-id", ""), stream, text
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    lines = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
                if r.status_code != 200 or lines[-1] != "[DONE]" or any('"error"' in line for line in lines):
                    return -1, r.headers.get("x-request-id", ""), stream, "\n".join(lines)
                events = [json.loads(line) for line in lines[:-1]]
                text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
                return r.status_code, r.headers.get("x-request-id", ""), stream, text

        return await asyncio.gather(*(one(i, stream) for i, stream in enumerate(plan)))


@pytest.mark.parametrize("breaker_mode", ["defaults", "breaker_held_closed"])
def test_it_serves_every_request_and_accounts_for_every_attempt_when_two_of_three_fail_at_random(
    gateway, acme, providers, upstream, breaker_mode
):
    kinds = {name: list(k) for name, k in KINDS.items()}
    held_closed = breaker_mode == "breaker_held_closed"
    if held_closed:
        Tenant.objects.filter(pk=acme.pk).update(health_settings=HELD_CLOSED)
        acme.refresh_from_db()
        breaker.thresholds_for(acme)  # in the breaker's cache before the first attempt
    else:
        kinds["flaky-anthropic"].append(REVOKED_KEY)
    # A 429's Retry-After keeps its provider out of every request until then (routing/
    # retry.py); a second of it, every few requests, would keep the flaky providers out
    # of most of a run this short. Held closed, they are to stay in the draw throughout.
    retry_after = "0" if held_closed else "1"
    for name, failure_kinds in kinds.items():
        upstream.configure(name, failure_rate=FAILURE_RATE, failure_kinds=failure_kinds, retry_after=retry_after)

    started = time.perf_counter()
    answers = asyncio.run(send_all(gateway.url, make_token(acme, TokenScope.COMPLETIONS)))
    elapsed = time.perf_counter() - started

    failed = [(status, text[:300]) for status, _, _, text in answers if status != 200]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[:3]}"
    assert [text for _, _, _, text in answers] == [f"Echo: request {i}" for i in range(REQUESTS)]
    usage_writer.flush()
    with tenant_context(acme.pk):
        records = list(UsageRecord.objects.filter(tenant=acme))
        buckets = list(MetricBucket.objects.filter(tenant=acme).select_related("provider"))

    # Every request: one record each, all served.
    assert sorted(r.request_id for r in records) == sorted(request_id for _, request_id, _, _ in answers)
    assert Counter((r.status, r.status_code, r.error_code) for r in records) == {("success", 200, ""): REQUESTS}
    assert Counter(r.stream for r in records) == Counter(stream for _, _, stream, _ in answers)
    for r in records:
        assert r.attempt_count == len(r.attempts) and r.attempts[-1]["outcome"] == "success"
        assert r.provider_name == r.attempts[-1]["provider"]
        assert all(a["outcome"] != "success" for a in r.attempts[:-1])

    # Every attempt: what the fake upstream saw, call for call and fault for fault.
    calls = Counter(a["provider"] for r in records for a in r.attempts)
    faults = Counter(a["provider"] for r in records for a in r.attempts if a["outcome"] != "success")
    for name in providers:
        seen = upstream.counts(name)
        assert (calls[name], faults[name]) == (seen.get("chat", 0), seen.get("failed", 0)), name
        in_buckets = [b for b in buckets if b.provider.name == name]
        assert sum(b.request_count for b in in_buckets) == calls[name]
        assert sum(b.error_count for b in in_buckets) == faults[name]
    assert faults["good"] == 0 and calls["good"] > 0
    assert faults["flaky-openai"] > 0 and faults["flaky-anthropic"] > 0
    outcomes = Counter(a["outcome"] for r in records for a in r.attempts)
    if held_closed:
        # Failover did the work: each flaky provider stayed in the draw to the end, and
        # every kind of fault came up.
        assert min(calls["flaky-openai"], calls["flaky-anthropic"]) > REQUESTS / 4, calls
        expected = {f"http_{k}" for k in ("500", "502", "503", "529", "429")} | {"malformed", "connect_error"}
        assert set(outcomes) == expected | {"success"}, outcomes
    print(
        f"\n{breaker_mode}: {REQUESTS} requests in {elapsed:.1f} s; attempts {dict(calls)}; outcomes {dict(outcomes)}"
    )


def test_the_fake_upstream_draws_each_failure_from_failure_kinds(upstream):
    upstream.configure("mixed", failure_rate=1.0, failure_kinds=["500", "503", "429"])
    url = f"{upstream.base_url('mixed')}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    statuses = Counter(
        httpx.post(url, json=body, headers={"Authorization": "Bearer sk-x"}).status_code for _ in range(30)
    )
    assert set(statuses) == {500, 503, 429}
    assert upstream.counts("mixed") == {"chat": 30, "total": 30, "failed": 30}
    for bad in ([], ["500", "nope"], "500"):
        with pytest.raises(ValueError):
            upstream.configure("mixed", failure_kinds=bad)
