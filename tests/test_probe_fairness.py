"""Per-tenant fairness in health probes (SPEC §5: no tenant can starve another's probes):
one tenant's hundred providers pointed at a black hole, each probe hanging until its
timeout, do not delay another tenant's probe."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from providers import registry
from providers.adapters.base import HealthProbe
from providers.adapters.http import BaseProvider
from routing.health import breaker, db_thread
from routing.health.probes import claim_due
from routing.health.worker import HealthWorker


class BlackHole(BaseProvider):
    """A probe that hangs until the worker's timeout cancels it."""

    type = "custom"
    in_flight = 0
    most = 0

    async def health_check(self) -> HealthProbe:
        cls = type(self)
        cls.in_flight += 1
        cls.most = max(cls.most, cls.in_flight)
        try:
            await asyncio.sleep(3600)
        finally:
            cls.in_flight -= 1
        return HealthProbe(ok=True, latency_ms=0.0)


class Stopwatch(BaseProvider):
    """A quick, healthy probe that notes when it ran."""

    type = "custom"
    times: list[float] = []

    async def health_check(self) -> HealthProbe:
        type(self).times.append(time.monotonic())
        return HealthProbe(ok=True, latency_ms=1.0)


@pytest.fixture(autouse=True)
def _factories():
    registry.register_factory("blackhole", BlackHole)
    registry.register_factory("stopwatch", Stopwatch)
    BlackHole.in_flight = BlackHole.most = 0
    Stopwatch.times = []
    breaker.reset()
    yield
    db_thread.flush()
    breaker.reset()


async def in_thread(fn, *args):
    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


@pytest.mark.django_db(transaction=True)
async def test_a_tenants_black_holes_do_not_delay_another_tenants_probe(acme, globex, make_provider):
    interval, timeout = 0.5, 3

    def fleet():
        for i in range(100):
            make_provider(acme, name=f"hole-{i}", type="custom", settings={"factory": "blackhole"},
                          timeout_seconds=timeout)  # fmt: skip
        make_provider(globex, name="fine", type="custom", settings={"factory": "stopwatch"})

    await in_thread(fleet)
    worker = HealthWorker(interval=interval, concurrency=20)
    started = time.monotonic()
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(2 * timeout)  # two rounds of the black holes timing out
    worker.stop()
    await asyncio.wait_for(task, 15)

    # Without fairness the black holes take every slot and the other tenant waits out
    # their timeout (3 s) each round. With it, its probe keeps its interval, give or take
    # the health DB thread storing twenty timeouts at once on a busy machine.
    times = [t - started for t in Stopwatch.times]
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert times and times[0] < 2 * interval, times
    assert max(gaps) < timeout / 1.5, gaps
    assert len(times) >= (2 * timeout) / interval / 2
    # The black holes kept the pool (20) busy; nothing of theirs beyond it.
    assert BlackHole.most == 20
    assert worker.probed >= 20 + len(times)


def due(tenant, make_provider, count, prefix):
    past = timezone.now() - timedelta(seconds=1)
    return [make_provider(tenant, name=f"{prefix}{i}", next_check_at=past) for i in range(count)]


@pytest.mark.django_db
def test_claims_take_turns_between_tenants(acme, globex, make_provider):
    due(acme, make_provider, 5, "a")
    due(globex, make_provider, 2, "g")
    claimed = claim_due(None, limit=4)
    owners = [c.tenant_id for c, _ in claimed]
    assert sorted(owners) == sorted([acme.pk, acme.pk, globex.pk, globex.pk])
    assert owners[0] != owners[1]  # one each per round, not the first tenant's whole list


@pytest.mark.django_db
def test_a_full_pool_still_gives_an_idle_tenant_its_reserved_probe(acme, globex, make_provider):
    due(acme, make_provider, 3, "a")
    due(globex, make_provider, 2, "g")
    claimed = claim_due(None, limit=0, in_flight={acme.pk: 20}, reserved=20)
    assert [c.tenant_id for c, _ in claimed] == [globex.pk]  # one: the busy tenant gets none
    assert claim_due(None, limit=0, in_flight={acme.pk: 20, globex.pk: 1}, reserved=20) == []


@pytest.mark.django_db
def test_reserved_probes_are_bounded(acme, globex, make_provider):
    due(acme, make_provider, 1, "a")
    due(globex, make_provider, 1, "g")
    assert len(claim_due(None, limit=0, reserved=1)) == 1
