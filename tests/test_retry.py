"""The retry policy (routing/retry.py) and how the router's one failover loop applies
it: re-sends only when no other candidate is left, after a backoff or the upstream's
Retry-After, within the request's deadline and the tenant's retry budget."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from axonflow_site.errors import RateLimited, UpstreamFailed
from providers.adapters.base import CompletionRequest, CompletionResponse, Usage, classify
from providers.models import ProviderConfig
from providers.registry import register_factory
from routing import cache, retry
from routing.health import breaker
from routing.retry import DEFAULT_POLICY, RetryPolicy, parse_policy
from tests.test_router import CALLS, err500, route, scripted, snapshot_of  # noqa: F401 (scripted: autouse)


def with_policy(snapshot, **fields):
    snapshot.retry = RetryPolicy(**fields)
    return snapshot


# --- the policy -----------------------------------------------------------------------------


def test_an_empty_setting_is_the_default_policy():
    assert parse_policy({}) is DEFAULT_POLICY and parse_policy(None) is DEFAULT_POLICY


def test_a_tenant_overrides_any_field():
    policy = parse_policy({"max_attempts": 2, "deadline_seconds": 5})
    assert (policy.max_attempts, policy.deadline_seconds, policy.backoff_base_ms) == (2, 5.0, 100.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_attemps": 2},
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"max_attempts": True},
        {"deadline_seconds": -1},
        {"deadline_seconds": 0},
        {"backoff_base_ms": float("nan")},
        {"backoff_max_ms": float("inf")},
        {"retries_per_provider": "2"},
        ["max_attempts"],
    ],
)
def test_it_refuses_bad_settings_by_name(overrides):
    with pytest.raises(ValueError):
        parse_policy(overrides)


def test_a_bad_setting_falls_back_to_the_defaults_with_a_warning(caplog):
    assert retry.policy_for({"max_attempts": -3}, tenant_id=7) is DEFAULT_POLICY
    assert "tenant 7: ignoring retry_settings" in caplog.text


def test_the_backoff_doubles_up_to_its_ceiling_with_jitter():
    policy = RetryPolicy(backoff_base_ms=100, backoff_max_ms=300)
    rng = random.Random(1)
    waits = [[policy.backoff(n, rng) for _ in range(200)] for n in range(3)]
    assert 0.05 <= min(waits[0]) and max(waits[0]) <= 0.1
    assert 0.1 <= min(waits[1]) and max(waits[1]) <= 0.2
    assert 0.15 <= min(waits[2]) and max(waits[2]) <= 0.3  # capped at backoff_max_ms
    assert len({round(w, 6) for w in waits[0]}) > 100  # spread, not one value


@pytest.mark.django_db
def test_the_snapshot_carries_the_tenants_policy(acme):
    acme.retry_settings = {"max_attempts": 2}
    acme.save()
    assert cache.load_snapshot(acme.pk).retry.max_attempts == 2


# --- the loop ---------------------------------------------------------------------------------


async def test_a_lone_provider_that_fails_is_sent_the_request_again_after_a_backoff():
    snap = snapshot_of({"name": "a", "script": [err500(), "second time lucky"]})
    result = await route(snap)
    assert result.response.content == "second time lucky"
    assert CALLS == ["a", "a"]
    first, second = result.route()["attempts"]
    assert "retry" not in first and second["retry"] is True and 50 <= second["waited_ms"] <= 100


async def test_another_candidate_is_tried_before_any_re_send():
    snap = snapshot_of({"name": "a", "priority": 1, "script": [err500()]}, {"name": "b", "script": ["ok"]})
    result = await route(snap)
    assert CALLS == ["a", "b"] and result.provider_name == "b"
    assert all("retry" not in a for a in result.route()["attempts"])


async def test_max_attempts_bounds_failovers_and_re_sends_together():
    snap = with_policy(snapshot_of(*[{"name": f"p{i}", "script": [err500()]} for i in range(3)]), max_attempts=2)
    with pytest.raises(UpstreamFailed) as info:
        await route(snap)
    assert len(CALLS) == 2 and len(info.value.details["attempts"]) == 2


async def test_a_short_retry_after_is_waited_for_before_the_re_send():
    slow_down = classify("a", 429, "slow down", {"retry-after": "0.3"})
    snap = snapshot_of({"name": "a", "script": [slow_down, "ok"]})
    started = time.monotonic()
    result = await route(snap)
    assert time.monotonic() - started >= 0.3
    assert result.route()["attempts"][1]["waited_ms"] >= 300


async def test_a_long_retry_after_ends_the_request_with_429_and_skips_the_provider_until_then():
    snap = snapshot_of({"name": "a", "script": [classify("a", 429, "quota", {"retry-after": "30"})]})
    with pytest.raises(RateLimited) as info:
        await route(snap)
    assert info.value.headers["Retry-After"] == "30" and CALLS == ["a"]
    with pytest.raises(RateLimited) as again:  # no upstream call while it asked for quiet
        await route(snap)
    assert CALLS == ["a"] and again.value.details["attempts"] == []
    assert 28 <= int(again.value.headers["Retry-After"]) <= 30


async def test_a_provider_asking_for_quiet_is_skipped_for_another_one():
    snap = snapshot_of(
        {"name": "a", "priority": 1, "script": [classify("a", 503, "busy", {"retry-after": "60"}), "ok"]},
        {"name": "b", "script": ["from b"]},
    )
    assert (await route(snap)).provider_name == "b"
    assert (await route(snap)).provider_name == "b"
    assert CALLS == ["a", "b", "b"]


async def test_the_retry_budget_keeps_a_failing_provider_from_getting_re_sends():
    snap = with_policy(
        snapshot_of({"name": "a", "script": [err500()]}),
        budget_ratio=0,
        budget_per_second=0,
        backoff_base_ms=1,
        backoff_max_ms=1,
    )
    for _ in range(12):
        with pytest.raises(UpstreamFailed):
            await route(snap)
    assert len(CALLS) == 12 + 10  # a fresh budget holds 10 re-sends; then none


async def test_upstream_refusing_the_key_fails_over_without_a_re_send(monkeypatch):
    rejected = []
    monkeypatch.setattr(breaker, "reject_credentials", lambda t, p, ms, error: rejected.append((p, error)))
    snap = snapshot_of(
        {"name": "revoked", "priority": 1, "script": [classify("revoked", 401, "Invalid API key")]},
        {"name": "b", "script": ["ok"]},
    )
    result = await route(snap)
    assert result.provider_name == "b" and CALLS == ["revoked", "b"]
    assert rejected == [(1, "Invalid API key")]
    with pytest.raises(UpstreamFailed):  # alone: failed over from, never re-sent
        await route(snapshot_of({"name": "revoked", "script": [classify("revoked", 403, "no access")]}))
    assert CALLS == ["revoked", "b", "revoked"]


class Slow:
    """Answers after SLOW_SECONDS: longer than the request's deadline."""

    type = "custom"
    supports_streaming = False
    seconds = 5.0

    def __init__(self, config: ProviderConfig):
        self.name = config.name

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        CALLS.append(self.name)
        await asyncio.sleep(self.seconds)
        return CompletionResponse("late", "m", "stop", Usage(1, 1))


async def test_the_deadline_bounds_the_whole_request_including_a_slow_attempt():
    register_factory("slow", Slow)
    snap = with_policy(snapshot_of({"name": "a"}), deadline_seconds=0.3)
    snap.configs[0].settings = {"factory": "slow"}
    started = time.monotonic()
    with pytest.raises(UpstreamFailed) as info:
        await route(snap)
    assert time.monotonic() - started < 0.3 + 0.1
    [attempt] = info.value.details["attempts"]
    assert attempt["outcome"] == "timeout" and "deadline of 0.3 s" in attempt["error"]


async def test_a_cancelled_request_records_its_attempt_as_client_cancelled():
    from usage.writer import writer as usage_writer

    register_factory("slow", Slow)
    snap = snapshot_of({"name": "a"})
    snap.configs[0].settings = {"factory": "slow"}
    task = asyncio.ensure_future(route(snap))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [entry] = list(usage_writer.pending)
    assert entry.error_code == "client_cancelled" and entry.status_code == 499
    assert [a["outcome"] for a in entry.attempts] == ["client_cancelled"]
