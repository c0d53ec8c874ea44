"""The API token cache (tenants/authentication.py): bounded, no entry per random bearer
string, never past a token's expiry, and revocation effective in every process: the
broadcast, a Redis generation number for a process that missed it, and a full drop
when the listener for the other processes' messages (routing/peers.py) loses Redis."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from routing import cache
from tenants import authentication
from tenants.authentication import MAX_CACHED_MISSES, TokenCache, TokenIdentity, cached_lookup, lookup_token
from tenants.models import ApiToken, hash_token
from tests.conftest import make_token, requires_redis
from tests.fixtures_upstream import closed_port

IDENTITY = TokenIdentity(1, 1, "acme", "community", "admin", "t", "axf_x")


@pytest.fixture
def small_cache(monkeypatch):
    small = TokenCache(size=3, miss_size=2)
    monkeypatch.setattr(authentication, "_cache", small)
    return small


@pytest.fixture
def own_generation(settings, monkeypatch):
    """A generation key of our own (several runs may share one Redis), none seen yet."""
    settings.CHANNEL_PREFIX = f"test-{uuid.uuid4().hex}"
    monkeypatch.setattr(authentication, "_seen_generation", None)
    monkeypatch.setattr(authentication, "_generation_unreadable", False)
    return authentication.generation_key()


# --- bounded --------------------------------------------------------------------------------------


def test_it_keeps_the_most_recently_used_tokens_up_to_its_size(acme, small_cache, django_assert_num_queries):
    raws = [make_token(acme, name=f"t{i}") for i in range(4)]
    for raw in raws[:3]:
        assert lookup_token(raw) is not None
    assert lookup_token(raws[0]) is not None  # used again: now the most recent
    assert lookup_token(raws[3]) is not None  # evicts the least recently used, raws[1]
    assert len(small_cache) == 3
    assert cached_lookup(raws[1]) == (False, None)
    with django_assert_num_queries(0):
        assert [cached_lookup(r)[0] for r in (raws[0], raws[2], raws[3])] == [True, True, True]


def test_random_bearer_strings_cannot_grow_it(acme, small_cache):
    raw = make_token(acme)
    assert lookup_token(raw) is not None
    for _ in range(50):
        assert lookup_token(f"axf_{secrets.token_urlsafe(32)}") is None
    assert len(small_cache) == 1 + 2  # the live token, and the two most recent misses
    assert cached_lookup(raw)[0] is True  # misses never push out a live token


def test_the_default_bounds():
    assert authentication.MAX_CACHED_TOKENS == 10_000 and MAX_CACHED_MISSES == 1_000


def test_an_overlong_bearer_string_is_refused_without_a_query(db, small_cache, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert lookup_token("a" * 100_000) is None
        assert cached_lookup("a" * 100_000) == (True, None)
    assert len(small_cache) == 0


def test_a_token_is_cached_no_longer_than_it_lives(acme, monkeypatch):
    token, raw = ApiToken.issue(acme, "short", expires_at=timezone.now() + timedelta(seconds=5))
    assert lookup_token(raw) is not None
    clock = time.monotonic() + 6
    monkeypatch.setattr(authentication.time, "monotonic", lambda: clock)
    assert cached_lookup(raw) == (False, None)  # its entry ended with the token
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert lookup_token(raw) is None


def test_a_load_that_raced_a_drop_is_not_stored():
    tokens = TokenCache()
    generation = tokens.generation
    tokens.clear()  # a revocation lands while a load is in flight
    tokens.put("digest", IDENTITY, time.monotonic() + 30, generation)
    assert tokens.get("digest", time.monotonic()) == (False, None)


def test_the_stored_digest_is_checked_in_constant_time(acme, monkeypatch):
    raw = make_token(acme)
    compared = []
    real = authentication.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(authentication.hmac, "compare_digest", spy)
    assert lookup_token(raw) is not None
    assert compared == [(hash_token(raw), hash_token(raw))]


def test_the_identity_carries_the_tenants_rate_limit_and_follows_it(acme):
    raw = make_token(acme)
    assert lookup_token(raw).api_rate_limit == 0
    acme.api_rate_limit = 60
    acme.save()  # drops the token cache (routing/signals.py)
    assert lookup_token(raw).api_rate_limit == 60


# --- the generation number ----------------------------------------------------------------------


def test_a_moved_or_unreadable_generation_drops_the_cache(monkeypatch):
    monkeypatch.setattr(authentication, "_seen_generation", None)
    monkeypatch.setattr(authentication, "_generation_unreadable", False)
    dropped = []
    monkeypatch.setattr(authentication, "forget_tokens", lambda: dropped.append(True))
    assert authentication.note_generation(4) is True  # first sight: nothing known about before
    assert authentication.note_generation(4) is False
    assert authentication.note_generation(5) is True  # another process changed a token
    assert authentication.note_generation(None) is True  # Redis away: changes may go unseen
    assert authentication.note_generation(None) is False  # ... entries are short-lived from now on
    assert authentication.note_generation(5) is True  # back: whatever happened meanwhile
    assert len(dropped) == 4


def test_without_redis_bumping_is_a_no_op(settings):
    settings.REDIS_URL = ""
    authentication.bump_generation()  # no error, no client


@requires_redis
def test_a_change_moves_the_shared_generation_but_does_not_drop_twice_here(acme, own_generation):
    import redis

    client = redis.Redis.from_url(authentication.settings.REDIS_URL)
    try:
        cache.broadcast_invalidation(acme.pk, tokens=True)  # what a committed token change does
        assert int(client.get(own_generation)) == 1
        assert authentication.note_generation(1) is False  # our own change: already dropped here
        cache.broadcast_invalidation(acme.pk, tokens=True)
        assert int(client.get(own_generation)) == 2
    finally:
        client.delete(own_generation)
        client.close()


def cache_one() -> None:
    authentication._cache.put("digest", IDENTITY, time.monotonic() + 30, authentication._cache.generation)


async def wait_until(condition, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@requires_redis
async def test_a_process_that_missed_the_broadcast_drops_its_tokens_within_the_check_interval(own_generation):
    import redis.asyncio as redis

    other_process = redis.from_url(authentication.settings.REDIS_URL)
    watch = asyncio.create_task(authentication.watch_generation(interval=0.05))
    try:
        await asyncio.sleep(0.2)  # the watch has seen the current generation
        cache_one()
        await asyncio.sleep(0.2)
        assert len(authentication._cache) == 1  # nothing changed: the cache stays warm
        await other_process.incr(own_generation)  # a token revoked elsewhere; its message lost
        assert await wait_until(lambda: len(authentication._cache) == 0) < 0.5
    finally:
        watch.cancel()
        await other_process.delete(own_generation)
        await other_process.aclose()


@pytest.fixture
def committed_token(transactional_db, acme) -> str:
    return make_token(acme)


async def test_while_redis_is_unreachable_the_cache_is_dropped_once_then_short_lived(
    settings, own_generation, caplog, committed_token
):
    from asgiref.sync import sync_to_async

    from axonflow_site import shared

    raw = committed_token
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    settings.AXONFLOW_REDIS_RETRY_SECONDS = 60
    cache_one()
    watch = asyncio.create_task(authentication.watch_generation(interval=0.05))
    try:
        await wait_until(lambda: len(authentication._cache) == 0)  # changes may go unseen from now on
        assert not shared.shared_layer_up()
        await sync_to_async(authentication._lookup_outside_request)(raw)  # closes its connection
        await asyncio.sleep(0.3)
        assert len(authentication._cache) == 1  # not dropped at every check...
    finally:
        watch.cancel()
    deadline = authentication._cache._known[hash_token(raw)][0]
    assert deadline - time.monotonic() <= authentication.DEGRADED_TTL_SECONDS  # ...but cached briefly
    assert "shared layer (Redis) unreachable" in caplog.text


# --- the invalidation listener ------------------------------------------------------------------


async def test_the_listener_drops_the_tokens_when_it_loses_redis(settings, monkeypatch):
    from axonflow_site import shared
    from routing import peers

    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"  # Redis went away
    monkeypatch.setattr(peers, "RETRY_SECONDS", 0.05)
    cache_one()
    listener = asyncio.create_task(peers.listen())
    try:
        await wait_until(lambda: len(authentication._cache) == 0)
        cache_one()
        await asyncio.sleep(0.3)  # several retries: while it stays away, the short TTLs do the rest
        assert len(authentication._cache) == 1
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        shared.reset()
