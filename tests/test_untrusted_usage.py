"""Upstream data is untrusted: token counts that are negative, not numbers, NaN or
absurd are counted as 0 (with a warning) at the adapter boundary, never a 500; the
usage store clamps whatever still reaches it, so no batch fails forever; the usage
queue is bounded, and what it drops is counted and logged."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import DataError

from providers.adapters import base
from providers.adapters.base import MAX_TOKEN_COUNT, token_count
from providers.fake_upstream.bedrock import TEST_CREDENTIALS
from tenants.models import TokenScope
from tests.conftest import make_token
from usage import store as usage_store
from usage import writer as usage_writer_module
from usage.entry import Entry
from usage.models import MetricBucket, UsageRecord
from usage.writer import writer as usage_writer

MINUTE = datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
BEDROCK_KEY_ID, BEDROCK_SECRET = next(iter(TEST_CREDENTIALS.items()))

# --- the boundary: token_count ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, 0), (17, 17), (MAX_TOKEN_COUNT, MAX_TOKEN_COUNT), (12.0, 12), ("12", 12), (" 40 ", 40), (None, 0),
        (-1, 0), (-5.0, 0), (MAX_TOKEN_COUNT + 1, 0), (1e30, 0), (10**40, 0), (math.nan, 0), (math.inf, 0),
        (-math.inf, 0), (3.5, 0), ("many", 0), ("", 0), ("nan", 0), ("1e400", 0), (True, 0), (False, 0),
        ([], 0), ({"n": 1}, 0), ("-3", 0), (b"12", 0),
    ],
)  # fmt: skip
def test_token_count_keeps_real_counts_and_zeroes_the_rest(value, expected):
    assert token_count(value) == expected and type(token_count(value)) is int


def test_token_count_warns_at_most_once_a_minute_and_counts(caplog, monkeypatch):
    monkeypatch.setattr(base, "_untrusted_warned_at", -1e9)
    before = base.untrusted_counts_dropped
    with caplog.at_level(logging.WARNING, logger="axonflow.adapters"):
        for value in (-1, "x" * 10_000, math.nan):
            token_count(value, "prompt_tokens")
    warnings = [r for r in caplog.records if r.name == "axonflow.adapters"]
    assert len(warnings) == 1 and "prompt_tokens" in warnings[0].getMessage()
    assert len(warnings[0].getMessage()) < 300  # a huge value is not copied into the log
    assert base.untrusted_counts_dropped == before + 3


# --- every wire format, through the gateway, to the stored record ----------------------------------

# (type, model, key, settings, extra fields)
PROVIDERS = [
    ("openai", "gpt-4o-mini", "sk-test-openai-0123456789abcdef", {}, {}),
    ("custom", "meta-llama/Llama-3.1-8B-Instruct", "custom-key-0123456789abcdef", {}, {}),
    ("anthropic", "claude-3-5-haiku-20241022", "sk-ant-test-0123456789abcdef", {}, {}),
    ("ollama", "llama3.2", "ollama-proxy-key-0123456789abcdef", {}, {}),
    ("gemini", "gemini-2.5-flash", "AIzaSy-test-gemini-0123456789abcdef", {}, {}),
    (
        "bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", BEDROCK_SECRET,
        {"aws_access_key_id": BEDROCK_KEY_ID}, {"region": "us-east-1"},
    ),
]  # fmt: skip
# reported [prompt, completion] -> stored (prompt, completion)
HOSTILE = [
    ([-5, 7], (0, 7)),
    (["many", 1e30], (0, 0)),
    (["12", math.nan], (12, 0)),
    ([20_000_000, -math.inf], (0, 0)),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind, model, key, provider_settings, fields", PROVIDERS, ids=[p[0] for p in PROVIDERS])
def test_hostile_token_counts_are_stored_clamped_for_every_wire_format(
    gateway, acme, make_provider, upstream, as_tenant, kind, model, key, provider_settings, fields, stream
):
    make_provider(
        acme, name=kind, type=kind, model=model, base_url=upstream.base_url(kind, kind), api_key=key,
        settings=provider_settings, cost_input_per_1k=Decimal("0.001"), cost_output_per_1k=Decimal("0.002"), **fields,
    )  # fmt: skip
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        for reported, _ in HOSTILE:
            upstream.configure(kind, token_counts=reported)
            r = client.post("/api/v1/completions", json={"prompt": "count me", "stream": stream})
            assert r.status_code == 200, r.text[:300]
            assert "event: error" not in r.text
            if not stream:
                usage = r.json()["usage"]
                assert all(type(v) is int and v >= 0 for v in usage.values()), usage
    usage_writer.flush()
    assert not usage_writer.pending  # nothing left failing for the next round
    with as_tenant(acme):
        stored = list(UsageRecord.objects.filter(tenant=acme).order_by("created", "pk"))
        bucket_tokens = sum(b.prompt_tokens + b.completion_tokens for b in MetricBucket.objects.filter(tenant=acme))
    assert [(r.prompt_tokens, r.completion_tokens) for r in stored] == [expected for _, expected in HOSTILE]
    assert all(r.status == "success" and r.total_tokens == r.prompt_tokens + r.completion_tokens for r in stored)
    assert bucket_tokens == sum(p + c for _, (p, c) in HOSTILE)


# --- the store clamps what still gets through (a custom factory's Usage, a bug) --------------------


def entry(tenant, provider, *, tokens=(10, 4), cost="0.002", latency=12.0, request_id="r") -> Entry:
    attempt = {"provider": provider.name, "outcome": "success", "status_code": 200, "latency_ms": latency, "error": ""}
    return Entry(
        tenant.pk, None, provider.pk, provider.name, [attempt], [provider.pk], "success", 200,
        prompt_tokens=tokens[0], completion_tokens=tokens[1], cost=cost if isinstance(cost, Decimal) else Decimal(cost),
        latency_ms=latency, created=MINUTE, request_id=request_id,
    )  # fmt: skip


@pytest.mark.parametrize(
    "tokens, cost, latency, stored",
    [
        ((-3, -4), "0.01", 5.0, (0, 0, Decimal("0.01"), 5.0)),
        ((3_000_000_000, 7), "0.01", 5.0, (usage_store.MAX_TOKENS, 0, Decimal("0.01"), 5.0)),
        (("12", None), "0.01", 5.0, (0, 0, Decimal("0.01"), 5.0)),
        ((math.nan, 2.0), "0.01", 5.0, (0, 2, Decimal("0.01"), 5.0)),
        ((1, 1), "5000000", 5.0, (1, 1, usage_store.MAX_RECORD_COST, 5.0)),
        ((1, 1), "-2", math.inf, (1, 1, Decimal("0"), 0.0)),
        ((1, 1), "NaN", -7.0, (1, 1, Decimal("0"), 0.0)),
        ((1, 1), "sNaN", 5, (1, 1, Decimal("0"), 5.0)),  # even a signalling NaN: no comparison raises
    ],
)
def test_the_store_clamps_values_its_columns_refuse(acme, make_provider, as_tenant, tokens, cost, latency, stored):
    provider = make_provider(acme, name="p")
    usage_writer.add(entry(acme, provider, tokens=tokens, cost=Decimal(cost), latency=latency))
    assert usage_writer.flush() == 1 and not usage_writer.pending
    with as_tenant(acme):
        (row,) = UsageRecord.objects.filter(tenant=acme)
        (bucket,) = MetricBucket.objects.filter(tenant=acme)
    assert (row.prompt_tokens, row.completion_tokens, row.cost, row.latency_ms) == stored
    assert row.total_tokens == stored[0] + stored[1]
    assert (bucket.prompt_tokens, bucket.completion_tokens) == stored[:2] and bucket.latency_sum_ms == stored[3]


def test_a_record_the_database_refuses_is_dropped_alone(acme, make_provider, as_tenant, monkeypatch, caplog):
    provider = make_provider(acme, name="p")
    real = usage_store.insert_records

    def refuse_poison(tenant_id, entries, *args):
        if any(e.request_id == "poison" for e in entries):
            raise DataError("value out of range")
        return real(tenant_id, entries, *args)

    monkeypatch.setattr(usage_store, "insert_records", refuse_poison)
    dropped = usage_writer.dropped
    for request_id in ("one", "poison", "two"):
        usage_writer.add(entry(acme, provider, request_id=request_id))
    assert usage_writer.flush() == 2
    assert not usage_writer.pending  # the poison is not retried forever
    assert usage_writer.dropped == dropped + 1 and "cannot be stored; dropped" in caplog.text
    with as_tenant(acme):
        assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["one", "two"]


# --- the queue is bounded ------------------------------------------------------------------------------


def test_a_full_queue_drops_new_entries_counts_them_and_logs_once_a_minute(
    acme, make_provider, monkeypatch, caplog
):
    provider = make_provider(acme, name="p")
    monkeypatch.setattr(usage_writer_module, "MAX_PENDING", 5)
    monkeypatch.setattr(usage_writer, "_drop_logged_at", -1e9)
    dropped = usage_writer.dropped
    with caplog.at_level(logging.ERROR, logger="axonflow.usage"):
        for i in range(12):
            usage_writer.add(entry(acme, provider, request_id=str(i)))
    assert [e.request_id for e in usage_writer.pending] == ["0", "1", "2", "3", "4"]
    assert usage_writer.dropped == dropped + 7
    reports = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(reports) == 1 and "usage queue full" in reports[0].getMessage()


def test_requeued_entries_respect_the_bound_too(acme, make_provider, monkeypatch):
    provider = make_provider(acme, name="p")
    monkeypatch.setattr(usage_writer_module, "MAX_PENDING", 4)
    monkeypatch.setattr(usage_store, "write_tenant", lambda *a: (_ for _ in ()).throw(RuntimeError("db away")))
    dropped = usage_writer.dropped
    for i in range(4):
        usage_writer.add(entry(acme, provider, request_id=str(i)))
    assert usage_writer.flush() == 0 and len(usage_writer.pending) == 4  # kept for retry
    usage_writer.pending.append(entry(acme, provider, request_id="late"))  # arrived while writing
    assert usage_writer.flush() == 0
    assert len(usage_writer.pending) == 4 and usage_writer.dropped == dropped + 1
