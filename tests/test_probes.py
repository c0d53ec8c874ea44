"""routing/health/probes.py: probing through the adapters against the fake upstream,
recording results, claiming due providers, and the probe side of the circuit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from console import live
from providers import registry
from providers.adapters.base import HealthProbe
from providers.adapters.http import BaseProvider
from providers.models import HealthResult, ProviderConfig
from routing import signals
from routing.health import breaker, status
from routing.health.probes import check_now, claim_due, claim_due_provider, next_due
from routing.health.status import DEGRADED, HEALTHY, UNHEALTHY

KEY = "sk-test-health-0123456789abcdef"
OK, FAILING = {}, {"failure_rate": 1.0, "failure_scope": "probe"}


@pytest.fixture
def provider(acme, upstream, make_provider):
    """An OpenAI-type provider of acme whose probes hit label `p1` of the fake upstream."""
    return make_provider(acme, name="p1", type="openai", base_url=upstream.base_url("p1", "openai"), api_key=KEY)


@pytest.fixture
def check(upstream, provider, as_tenant):
    """Set the upstream's behaviour, probe now, return (observation, provider status, source)."""

    def run(behaviour: dict, config: ProviderConfig = provider, label: str = "p1"):
        upstream.configure(label, **behaviour)
        result = check_now(config)
        with as_tenant(config.tenant):
            config.refresh_from_db()
        return result.status, config.health_status, config.health_source

    return run


def statuses(check, behaviours) -> list[str]:
    return [check(b)[1] for b in behaviours]


def test_probes_drive_a_provider_through_healthy_failing_recovered(check, upstream, provider, as_tenant):
    behaviours = [OK, OK, FAILING, FAILING, FAILING, FAILING, OK, OK, OK]
    assert statuses(check, behaviours) == [
        HEALTHY, HEALTHY, DEGRADED, DEGRADED, UNHEALTHY, UNHEALTHY, UNHEALTHY, HEALTHY, HEALTHY,
    ]  # fmt: skip
    assert upstream.counts("p1")["probe"] == 9
    with as_tenant(provider.tenant):
        stored = list(HealthResult.objects.filter(provider=provider).order_by("checked_at", "pk"))
    assert [r.status for r in stored] == [HEALTHY, HEALTHY] + [UNHEALTHY] * 4 + [HEALTHY] * 3
    assert {r.source for r in stored} == {"probe"}
    assert all(r.error for r in stored if r.status == UNHEALTHY)


def test_alternating_probe_outcomes_do_not_flap(check):
    seen = statuses(check, [OK] + [FAILING, OK] * 4)
    assert seen == [HEALTHY] + [DEGRADED] * 8


def test_a_slow_upstream_is_degraded(acme, check):
    acme.health_settings = {"slow_ms": 50}
    acme.save()
    assert check({"latency_ms": 150}) == (DEGRADED, DEGRADED, "probe")
    assert check({}) == (HEALTHY, DEGRADED, "probe")
    assert check({})[1] == HEALTHY


def test_a_hanging_upstream_fails_the_probe_at_its_timeout(acme, check, as_tenant, provider):
    acme.health_settings = {"probe_timeout_seconds": 0.3}
    acme.save()
    assert check({"failure_kind": "timeout", "failure_rate": 1.0})[0] == UNHEALTHY
    with as_tenant(acme):
        result = HealthResult.objects.get(provider=provider)
    assert result.error == "probe timed out after 0.3 s"


def test_a_key_echoed_by_the_upstream_never_reaches_the_stored_error(check, provider, as_tenant, caplog):
    assert check({"failure_kind": "echo_key", "failure_rate": 1.0})[0] == UNHEALTHY
    with as_tenant(provider.tenant):
        result = HealthResult.objects.get(provider=provider)
    assert result.error
    assert KEY not in result.error
    assert KEY not in caplog.text


def test_a_provider_that_cannot_be_built_fails_its_probe(acme, make_provider, as_tenant):
    config = make_provider(acme, name="ghost", type="custom", settings={"factory": "not-registered"})
    result = check_now(config)
    assert result.status == UNHEALTHY
    assert "not-registered" in result.error


class Exploding(BaseProvider):
    type = "custom"

    async def health_check(self) -> HealthProbe:
        raise RuntimeError("adapter bug")


def test_an_adapter_that_raises_fails_its_probe_instead_of_crashing(acme, make_provider):
    registry.register_factory("exploding", Exploding)
    config = make_provider(acme, name="boom", type="custom", settings={"factory": "exploding"})
    result = check_now(config)
    assert (result.status, result.error) == (UNHEALTHY, "RuntimeError: adapter bug")


def test_a_status_change_invalidates_the_routing_caches_after_commit(
    check, monkeypatch, django_capture_on_commit_callbacks, acme
):
    calls = []
    monkeypatch.setattr(signals, "broadcast_invalidation", calls.append)  # the routing cache's receiver
    monkeypatch.setattr(live, "schedule", lambda *a, **kw: None)  # the board's receiver
    with django_capture_on_commit_callbacks(execute=True):
        check(OK)
    assert calls == [acme.pk]  # unknown -> healthy
    with django_capture_on_commit_callbacks(execute=True):
        check(OK)
    assert calls == [acme.pk]  # still healthy: nothing to invalidate


# --- the probe side of the traffic circuit ----------------------------------------------------


def open_by_traffic(config, as_tenant, seconds_ago: float):
    with as_tenant(config.tenant):
        ProviderConfig.objects.filter(pk=config.pk).update(
            health_status=UNHEALTHY,
            health_source="traffic",
            health_changed_at=timezone.now() - timedelta(seconds=seconds_ago),
        )


def test_a_probe_during_the_cooldown_does_not_close_the_circuit(check, provider, as_tenant):
    open_by_traffic(provider, as_tenant, seconds_ago=1)
    assert check(OK) == (HEALTHY, UNHEALTHY, "traffic")


def test_a_good_probe_after_the_cooldown_closes_the_circuit(check, provider, as_tenant, circuit_changes, acme):
    breaker.remember_thresholds(acme.pk, status.DEFAULT_THRESHOLDS)
    for _ in range(10):
        breaker.record_attempt(acme.pk, provider.pk, False, 5.0, "HTTP 500")
    assert breaker.is_circuit_open(provider.pk)
    open_by_traffic(provider, as_tenant, seconds_ago=status.DEFAULT_THRESHOLDS.circuit_cooldown_seconds + 1)
    assert check(OK) == (HEALTHY, HEALTHY, "probe")
    assert not breaker.is_circuit_open(provider.pk)


def test_a_failed_probe_after_the_cooldown_hands_over_to_probe_hysteresis(check, provider, as_tenant):
    open_by_traffic(provider, as_tenant, seconds_ago=status.DEFAULT_THRESHOLDS.circuit_cooldown_seconds + 1)
    assert check(FAILING) == (UNHEALTHY, UNHEALTHY, "probe")
    assert check(OK)[1:] == (UNHEALTHY, "probe")
    assert check(OK)[1:] == (HEALTHY, "probe")


# --- claiming ---------------------------------------------------------------------------------------


def test_next_due_keeps_probes_on_a_fixed_grid():
    now = timezone.now()
    interval = timedelta(seconds=30)
    assert next_due(now - timedelta(seconds=2), interval, now) == now + timedelta(seconds=28)
    assert next_due(now - timedelta(hours=1), interval, now) == now + interval  # after an outage


def test_a_due_provider_is_claimed_once_per_interval(acme, make_provider, as_tenant):
    config = make_provider(acme, name="a", next_check_at=timezone.now() - timedelta(seconds=1))
    interval = timedelta(seconds=30)
    claimed = claim_due_provider(acme.pk, interval)
    assert claimed is not None and claimed.pk == config.pk
    assert claim_due_provider(acme.pk, interval) is None
    with as_tenant(acme):
        config.refresh_from_db()
    assert config.next_check_at > timezone.now() + timedelta(seconds=28)


def test_disabled_and_not_yet_due_providers_are_not_claimed(acme, make_provider):
    make_provider(acme, name="off", enabled=False, next_check_at=timezone.now() - timedelta(minutes=5))
    make_provider(acme, name="later", next_check_at=timezone.now() + timedelta(minutes=5))
    assert claim_due_provider(acme.pk, timedelta(seconds=30)) is None


def test_a_tenant_claims_only_its_own_providers(acme, globex, make_provider):
    make_provider(globex, name="theirs", next_check_at=timezone.now() - timedelta(seconds=1))
    assert claim_due_provider(acme.pk, timedelta(seconds=30)) is None


def test_claim_due_covers_every_tenant_up_to_the_limit(acme, globex, make_provider):
    past = timezone.now() - timedelta(seconds=1)
    for name in ("a", "b", "c"):
        make_provider(acme, name=name, next_check_at=past)
    make_provider(globex, name="g", next_check_at=past)
    first = claim_due(None, limit=2)
    rest = claim_due(None, limit=10)
    names = sorted(f"{c.tenant_id}:{c.name}" for c, _ in first + rest)
    assert len(first) == 2
    assert names == sorted([f"{acme.pk}:a", f"{acme.pk}:b", f"{acme.pk}:c", f"{globex.pk}:g"])
    assert claim_due(None, limit=10) == []


def test_claim_due_uses_each_tenants_interval(acme, globex, make_provider, as_tenant):
    acme.health_interval_seconds = 10
    acme.save()
    globex.health_interval_seconds = 120
    globex.save()
    now = timezone.now()
    a = make_provider(acme, name="a", next_check_at=now)
    g = make_provider(globex, name="g", next_check_at=now)
    claim_due(None, limit=10)
    with as_tenant(acme):
        a.refresh_from_db()
    with as_tenant(globex):
        g.refresh_from_db()
    assert a.next_check_at - now == timedelta(seconds=10)
    assert g.next_check_at - now == timedelta(seconds=120)
