"""The usage writer: batches of UsageRecords and per-minute MetricBuckets, per tenant,
nothing lost; and a 2,000-request burst through the gateway accounted for exactly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from django.db import InterfaceError, OperationalError
from django.db.models import Sum

from routing.health import breaker
from tenants.models import ApiToken, TokenScope
from tests.conftest import make_token
from usage import store as usage_store
from usage.entry import Entry
from usage.metrics import bucket_index
from usage.models import MetricBucket, UsageRecord
from usage.writer import _flush_at_exit
from usage.writer import writer as usage_writer

MINUTE = datetime(2026, 11, 1, 12, 30, tzinfo=UTC)


def attempt(name, outcome="success", latency=12.0, status=200):
    return {"provider": name, "outcome": outcome, "status_code": status, "latency_ms": latency, "error": ""}


def entry(
    tenant, provider, *, attempts=None, ids=None, status="success", seconds=0, tokens=(10, 4), cost="0.002", token=None
):
    return Entry(
        tenant.pk, token, provider.pk if provider else None, provider.name if provider else "",
        attempts if attempts is not None else [attempt(provider.name)],
        ids if ids is not None else [provider.pk], status, 200 if status == "success" else 502,
        prompt_tokens=tokens[0], completion_tokens=tokens[1], cost=Decimal(cost),
        created=MINUTE.replace(second=seconds),
    )  # fmt: skip


@pytest.fixture
def ab(acme, make_provider):
    return make_provider(acme, name="a"), make_provider(acme, name="b")


def buckets(tenant, as_tenant) -> dict[str, MetricBucket]:
    with as_tenant(tenant):
        return {b.provider.name: b for b in MetricBucket.objects.filter(tenant=tenant).select_related("provider")}


def rows(tenant, as_tenant) -> list[UsageRecord]:
    with as_tenant(tenant):
        return list(UsageRecord.objects.filter(tenant=tenant).order_by("created", "pk"))


def test_flush_writes_records_and_a_bucket_per_provider_and_minute(acme, ab, as_tenant):
    a, b = ab
    usage_writer.add(entry(acme, a))
    usage_writer.add(entry(acme, a, seconds=30))
    failover = [attempt("a", "http_500", 40.0, 500), attempt("b", "success", 7.0)]
    usage_writer.add(entry(acme, b, attempts=failover, ids=[a.pk, b.pk]))
    assert usage_writer.flush() == 3
    assert [(r.provider_name, r.providers_tried, r.total_tokens) for r in rows(acme, as_tenant)] == [
        ("a", ["a"], 14), ("b", ["a", "b"], 14), ("a", ["a"], 14),
    ]  # fmt: skip
    got = buckets(acme, as_tenant)
    assert (got["a"].minute, got["a"].request_count, got["a"].error_count) == (MINUTE, 3, 1)
    assert got["a"].latency_sum_ms == 64.0
    assert got["a"].latency_histogram[bucket_index(12.0)] == 2 and got["a"].latency_histogram[bucket_index(40.0)] == 1
    assert (got["a"].prompt_tokens, got["a"].completion_tokens, got["a"].cost) == (20, 8, Decimal("0.004"))
    assert (got["b"].request_count, got["b"].error_count, got["b"].prompt_tokens) == (1, 0, 10)


def test_later_flushes_add_to_the_same_minute(acme, ab, as_tenant):
    a, _ = ab
    for _ in range(3):
        usage_writer.add(entry(acme, a))
        usage_writer.flush()
    bucket = buckets(acme, as_tenant)["a"]
    assert bucket.request_count == 3 and sum(bucket.latency_histogram) == 3
    with as_tenant(acme):
        assert MetricBucket.objects.filter(tenant=acme).count() == 1


def test_rate_limit_skips_are_not_requests_to_the_provider(acme, ab, as_tenant):
    a, b = ab
    attempts = [attempt("a", "rate_limited", 0.0, None), attempt("b")]
    usage_writer.add(entry(acme, b, attempts=attempts, ids=[a.pk, b.pk]))
    usage_writer.flush()
    assert set(buckets(acme, as_tenant)) == {"b"}
    assert rows(acme, as_tenant)[0].providers_tried == ["b"]


def test_a_deleted_providers_records_keep_its_name(acme, ab, as_tenant):
    a, _ = ab
    usage_writer.add(entry(acme, a))
    with as_tenant(acme):
        a.delete()
    usage_writer.flush()
    (row,) = rows(acme, as_tenant)
    assert (row.provider_id, row.provider_name) == (None, "a")
    assert buckets(acme, as_tenant) == {}


def test_a_failed_write_keeps_the_entries_for_the_next_flush(acme, ab, as_tenant, monkeypatch, caplog):
    a, _ = ab
    real = usage_store.write_tenant
    calls = []

    def flaky(tenant_id, entries):
        calls.append(len(entries))
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real(tenant_id, entries)

    monkeypatch.setattr(usage_store, "write_tenant", flaky)
    for _ in range(4):
        usage_writer.add(entry(acme, a))
    assert usage_writer.flush() == 0
    assert "kept for retry" in caplog.text
    assert len(usage_writer.pending) == 4
    assert usage_writer.flush() == 4
    assert len(rows(acme, as_tenant)) == 4


@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_while_the_database_is_away_entries_wait_and_the_outage_is_logged_once(
    error, acme, ab, as_tenant, monkeypatch, caplog
):
    a, _ = ab
    real, away = usage_store.write_tenant, [True]

    def unreachable(tenant_id, entries):
        if away[0]:
            raise error("connection refused")
        return real(tenant_id, entries)

    monkeypatch.setattr(usage_store, "write_tenant", unreachable)
    for _ in range(3):
        usage_writer.add(entry(acme, a))
    for _ in range(5):
        assert usage_writer.flush() == 0
        usage_writer.add(entry(acme, a))
    assert usage_writer.held() == 8 and usage_writer.dropped == 0
    assert caplog.text.count("the database cannot be reached") == 1  # not once a round
    away[0] = False
    assert usage_writer.flush() == 8
    assert len(rows(acme, as_tenant)) == 8
    assert "the database is reachable again" in caplog.text


def test_one_tenants_failure_does_not_hold_back_another(acme, globex, ab, make_provider, as_tenant, monkeypatch):
    g = make_provider(globex, name="g")
    real = usage_store.write_tenant
    monkeypatch.setattr(
        usage_store,
        "write_tenant",
        lambda t, e: (_ for _ in ()).throw(RuntimeError("x")) if t == acme.pk else real(t, e),
    )
    usage_writer.add(entry(acme, ab[0]))
    usage_writer.add(entry(globex, g))
    assert usage_writer.flush() == 1
    assert len(rows(globex, as_tenant)) == 1
    assert [e.tenant_id for e in usage_writer.pending] == [acme.pk]


def test_the_writer_stamps_token_last_used(acme, ab, as_tenant):
    token, _ = ApiToken.issue(acme, "app", TokenScope.COMPLETIONS)
    usage_writer.add(entry(acme, ab[0], token=token.pk))
    usage_writer.flush()
    token.refresh_from_db()
    assert token.last_used == MINUTE
    assert rows(acme, as_tenant)[0].token_id == token.pk


@pytest.mark.django_db(transaction=True)
def test_the_thread_writes_when_a_batch_fills_and_stop_flushes_the_rest(acme, ab, as_tenant, settings):
    settings.AXONFLOW_USAGE_BATCH_SIZE = 5
    settings.AXONFLOW_USAGE_FLUSH_SECONDS = 3600  # only the batch size can wake it
    usage_writer.autostart = True
    try:
        for _ in range(5):
            usage_writer.add(entry(acme, ab[0]))
        deadline = time.monotonic() + 10
        while len(rows(acme, as_tenant)) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(rows(acme, as_tenant)) == 5
        usage_writer.add(entry(acme, ab[0]))
    finally:
        usage_writer.stop()
        usage_writer.autostart = False
    assert len(rows(acme, as_tenant)) == 6 and not usage_writer.pending


@pytest.mark.django_db(transaction=True)
def test_at_exit_it_waits_for_the_batch_the_thread_is_writing(acme, ab, as_tenant, settings, monkeypatch):
    # The queue is empty while the thread writes the batch it took: exit must wait for it.
    settings.AXONFLOW_USAGE_BATCH_SIZE = 1
    real, writing = usage_store.write_tenant, threading.Event()

    def slow(tenant_id, entries):
        writing.set()
        time.sleep(0.3)
        return real(tenant_id, entries)

    monkeypatch.setattr(usage_store, "write_tenant", slow)
    usage_writer.autostart = True
    try:
        usage_writer.add(entry(acme, ab[0]))
        assert writing.wait(5) and not usage_writer.pending
        _flush_at_exit()
        assert len(rows(acme, as_tenant)) == 1
    finally:
        usage_writer.stop()
        usage_writer.autostart = False


@pytest.mark.django_db(transaction=True)
def test_a_failed_round_does_not_stop_the_thread(acme, ab, as_tenant, settings, monkeypatch, caplog):
    settings.AXONFLOW_USAGE_FLUSH_SECONDS = 0.05
    failures = [RuntimeError("connection reset")]

    def close_old_connections():
        if failures:
            raise failures.pop()

    real, written = usage_store.write_tenant, threading.Event()

    def write_tenant(tenant_id, entries):
        real(tenant_id, entries)
        written.set()

    monkeypatch.setattr("usage.writer.close_old_connections", close_old_connections)
    monkeypatch.setattr(usage_store, "write_tenant", write_tenant)
    usage_writer.autostart = True
    try:
        usage_writer.add(entry(acme, ab[0]))
        # Written by the thread itself, in a later round: stop() would write it too.
        assert written.wait(5) and usage_writer._thread is not None
    finally:
        usage_writer.stop()
        usage_writer.autostart = False
    assert "usage writer round failed" in caplog.text
    assert len(rows(acme, as_tenant)) == 1


# --- a burst through the gateway -----------------------------------------------------------------

BURST = 2000
CONCURRENCY = 50


async def burst(url: str, token: str) -> Counter:
    served: Counter = Counter()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=60
    ) as client:
        queue = iter(range(BURST))

        async def worker() -> None:
            for i in queue:
                if i % 2:
                    r = await client.post(
                        "/v1/chat/completions",
                        json={"model": "auto", "messages": [{"role": "user", "content": f"n{i}"}]},
                    )
                    served[(r.status_code, r.headers.get("x-axonflow-provider"))] += 1
                else:
                    r = await client.post("/api/v1/completions", json={"prompt": f"n{i}"})
                    served[(r.status_code, r.json().get("provider"))] += 1

        await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
    return served


@pytest.mark.django_db(transaction=True)
def test_after_a_burst_usage_records_equal_requests_served_per_provider(
    gateway, acme, make_provider, upstream, as_tenant
):
    breaker.reset()
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111", weight=70)
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222", weight=30)
    served = asyncio.run(burst(gateway.url, make_token(acme, TokenScope.COMPLETIONS)))
    assert sum(served.values()) == BURST and {status for status, _ in served} == {200}
    by_provider = {name: n for (_, name), n in served.items()}
    assert set(by_provider) == {"a", "b"}

    usage_writer.flush()
    with as_tenant(acme):
        records = UsageRecord.objects.filter(tenant=acme)
        assert records.count() == BURST
        assert dict(Counter(records.values_list("provider_name", flat=True))) == by_provider
        metric = dict(
            MetricBucket.objects.filter(tenant=acme).values_list("provider__name").annotate(n=Sum("request_count"))
        )
    assert metric == by_provider
    assert {name: upstream.counts(name)["chat"] for name in by_provider} == by_provider
