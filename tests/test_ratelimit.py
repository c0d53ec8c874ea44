"""Token buckets per provider: in-process, and shared through Redis."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from routing.ratelimit import LocalLimiter, RedisLimiter
from tests.conftest import requires_redis


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_grants_one_minutes_budget_then_refuses():
    limiter = LocalLimiter(FakeClock())
    granted = [limiter.take("p1", 5) == 0 for _ in range(8)]
    assert granted == [True] * 5 + [False] * 3


def test_a_refusal_says_when_the_next_token_arrives():
    limiter = LocalLimiter(FakeClock())
    for _ in range(60):
        limiter.take("p1", 60)
    assert limiter.take("p1", 60) == pytest.approx(1.0)


def test_the_bucket_refills_at_rate_per_second():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    for _ in range(60):
        limiter.take("p1", 60)
    clock.now += 10
    granted = sum(limiter.take("p1", 60) == 0 for _ in range(20))
    assert granted == 10


def test_zero_means_unlimited():
    limiter = LocalLimiter(FakeClock())
    assert all(limiter.take("p1", 0) == 0 for _ in range(10_000))


def test_providers_have_separate_buckets():
    limiter = LocalLimiter(FakeClock())
    assert [limiter.take("a", 1), limiter.take("b", 1)] == [0, 0]
    assert limiter.take("a", 1) > 0


@pytest.fixture
async def redis_pair():
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    first, second = RedisLimiter(settings.REDIS_URL, prefix), RedisLimiter(settings.REDIS_URL, prefix)
    yield first, second
    await first.close()
    await second.close()


@requires_redis
async def test_two_processes_sharing_redis_enforce_one_budget(redis_pair):
    first, second = redis_pair
    results = []
    for i in range(20):
        limiter = first if i % 2 == 0 else second
        results.append(await limiter.acquire("provider-7", 6))
    assert sum(1 for wait in results if wait == 0) == 6
    assert all(wait > 0 for wait in results[6:])
    # Both instances saw grants: the budget was shared, not split or doubled.
    assert results[0] == 0 and results[1] == 0


@requires_redis
async def test_a_redis_refusal_carries_the_wait(redis_pair):
    first, _ = redis_pair
    for _ in range(60):
        await first.acquire("p", 60)
    wait = await first.acquire("p", 60)
    assert 0 < wait <= 1.0


async def test_an_unreachable_redis_falls_back_to_buckets_in_this_process(settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    limiter = RedisLimiter(settings.REDIS_URL)
    assert await limiter.acquire("p", 1) == 0
    assert await limiter.acquire("p", 1) > 0  # the limit still holds, per process
    assert caplog.text.count("shared layer (Redis) unreachable") == 1
    await limiter.close()
