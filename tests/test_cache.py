"""The routing snapshot cache: loaded once, dropped when what it holds changes, here and
(through routing/peers.py) in every other process."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from providers.models import ProviderConfig
from routing import cache
from tenants.authentication import cached_lookup, lookup_token
from tenants.models import ApiToken
from tests.conftest import requires_redis


def test_a_snapshot_is_loaded_once_and_then_served_from_memory(acme, make_provider, django_assert_num_queries):
    make_provider(acme, name="a")
    first = cache.load_snapshot(acme.pk)
    with django_assert_num_queries(0):
        assert cache.cached_snapshot(acme.pk) is first
    assert [c.name for c in first.configs] == ["a"] and first.plan == acme.plan


def test_saving_a_provider_drops_the_tenants_snapshot(acme, globex, make_provider, as_tenant):
    config = make_provider(acme, name="a", weight=10)
    cache.load_snapshot(acme.pk)
    cache.load_snapshot(globex.pk)
    with as_tenant(acme):
        config.weight = 90
        config.save()
    assert cache.cached_snapshot(acme.pk) is None
    assert cache.cached_snapshot(globex.pk) is not None  # other tenants keep theirs
    assert cache.load_snapshot(acme.pk).by_name["a"].weight == 90


def test_adding_and_deleting_providers_drop_the_snapshot(acme, make_provider, as_tenant):
    cache.load_snapshot(acme.pk)
    config = make_provider(acme, name="new")
    assert cache.cached_snapshot(acme.pk) is None
    cache.load_snapshot(acme.pk)
    with as_tenant(acme):
        config.delete()
    assert cache.cached_snapshot(acme.pk) is None
    assert cache.load_snapshot(acme.pk).configs == ()


def test_a_health_change_written_with_update_is_dropped_by_the_broadcast(acme, make_provider, as_tenant):
    make_provider(acme, name="a")
    cache.load_snapshot(acme.pk)
    with as_tenant(acme):
        ProviderConfig.objects.filter(tenant=acme).update(health_status="unhealthy")
    assert cache.cached_snapshot(acme.pk) is not None  # update() sends no signal...
    cache.broadcast_invalidation(acme.pk)  # ...so the health worker calls this
    assert cache.load_snapshot(acme.pk).by_name["a"].health_status == "unhealthy"


def test_saving_the_tenant_drops_its_snapshot_and_the_token_cache(acme):
    _token, raw = ApiToken.issue(acme, "app")
    lookup_token(raw)
    cache.load_snapshot(acme.pk)
    acme.store_prompts = True
    acme.save()
    assert cache.cached_snapshot(acme.pk) is None
    assert cached_lookup(raw) == (False, None)


def test_revoking_a_token_drops_it_from_the_cache(acme):
    token, raw = ApiToken.issue(acme, "app")
    assert lookup_token(raw) is not None
    token.revoked_at = timezone.now()
    token.save()
    assert cached_lookup(raw) == (False, None)
    assert lookup_token(raw) is None


def test_a_load_that_raced_an_invalidation_is_not_kept(acme, make_provider, monkeypatch):
    make_provider(acme, name="a")
    real_get = cache.TenantSnapshot.__post_init__

    def invalidate_mid_load(self):
        cache.invalidate_tenant(acme.pk)  # a change lands while the rows are being read
        real_get(self)

    monkeypatch.setattr(cache.TenantSnapshot, "__post_init__", invalidate_mid_load)
    cache.load_snapshot(acme.pk)
    assert cache.cached_snapshot(acme.pk) is None


def test_an_expired_snapshot_is_reloaded(acme, make_provider, monkeypatch):
    make_provider(acme, name="a")
    snap = cache.load_snapshot(acme.pk)
    snap.expires = 0
    assert cache.cached_snapshot(acme.pk) is None


@pytest.mark.django_db(transaction=True)
async def test_concurrent_misses_load_once(acme, make_provider, monkeypatch):
    await sync_to_async(make_provider)(acme, name="a")
    loads = []
    real = cache.load_snapshot
    monkeypatch.setattr(cache, "load_snapshot", lambda tenant_id: (loads.append(tenant_id), real(tenant_id))[1])
    snaps = await asyncio.gather(*[cache.get_snapshot(acme.pk) for _ in range(20)])
    assert loads == [acme.pk]
    assert all(s is snaps[0] for s in snaps)


@requires_redis
@pytest.mark.django_db(transaction=True)
async def test_a_broadcast_from_another_process_drops_the_snapshot_here(acme, make_provider, settings):
    import redis.asyncio as redis

    from routing import peers

    settings.CHANNEL_PREFIX = f"test-{uuid.uuid4().hex[:8]}"  # several runs may share one Redis
    other = redis.from_url(settings.REDIS_URL)  # as another process would hold
    message = {"kind": "invalidate", "origin": "elsewhere", "payload": {"tenant_id": acme.pk, "tokens": False}}
    await sync_to_async(make_provider)(acme, name="a")
    listener = asyncio.ensure_future(peers.listen())
    try:
        for _ in range(100):  # until the listener has subscribed (which drops everything once)
            if (await other.pubsub_numsub(peers.channel()))[0][1]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        await cache.get_snapshot(acme.pk)
        assert cache.cached_snapshot(acme.pk) is not None
        await other.publish(peers.channel(), json.dumps(message))
        for _ in range(100):
            if cache.cached_snapshot(acme.pk) is None:
                break
            await asyncio.sleep(0.01)
        assert cache.cached_snapshot(acme.pk) is None
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await other.aclose()
