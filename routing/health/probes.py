"""Health probes: claim due providers, probe them, store the result, derive the new
status and tell everyone who cares (routing caches, the live board).

Claiming is a lease on `ProviderConfig.next_check_at` (hc sendalerts' shape): a worker
moves a due row's next_check_at one interval forward and then probes it; "0 rows
updated" means another worker got it. On PostgreSQL the candidate row is read with
`FOR UPDATE SKIP LOCKED`, so concurrent workers never wait for each other and each
provider is probed once per interval in total. Because the lease moves before the
probe, a probe that crashes has already pushed its row forward: no crash loop.

Every ORM call here runs inside tenants.rls.tenant_context (RLS is forced on
providers_providerconfig and providers_healthresult); async callers reach it through
routing.health.db_thread. The loop itself lives in routing/health/worker.py.

What changed is told through `axonflow_site.events.status_changed` (the routing cache
and the console's board listen); circuit changes that the breaker announces with
`events.circuit_changed` are stored here (`on_circuit_changed`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from axonflow_site import events
from axonflow_site.errors import ProviderNotFound
from providers import registry, secrets
from providers.adapters.base import HealthProbe
from providers.models import CREDENTIALS_REJECTED, HealthResult, HealthSource, ProviderConfig
from routing.health import breaker, db_thread
from routing.health.status import DEFAULT_THRESHOLDS, HEALTHY, UNHEALTHY, derive_status, observe
from tenants.models import Tenant
from tenants.rls import is_postgres, tenant_context

if TYPE_CHECKING:
    from routing.health.status import Thresholds

log = logging.getLogger("axonflow.monitor")

PROBE, TRAFFIC = HealthSource.PROBE.value, HealthSource.TRAFFIC.value
CLAIM_RETRIES = 3


@dataclass(slots=True)
class ProbeOutcome:
    result: HealthResult
    config: ProviderConfig
    changed: bool  # the provider's status changed


# --- claiming --------------------------------------------------------------------------------


def interval_for(tenant: Tenant, override: float | None = None) -> timedelta:
    seconds = override or tenant.health_interval_seconds or settings.AXONFLOW_HEALTH_INTERVAL_SECONDS
    return timedelta(seconds=seconds)


def next_due(due: datetime, interval: timedelta, now: datetime) -> datetime:
    """The lease's end: one interval after the slot just claimed, so probes stay on a
    fixed grid however late the worker polled; after an outage, one interval from now."""
    following = due + interval
    return following if following > now else now + interval


def claim_due_provider(tenant_id: int, interval: timedelta, now: datetime | None = None) -> ProviderConfig | None:
    """Claim one enabled provider of the tenant whose check is due, or None.

    The claim is a conditional UPDATE of next_check_at (still the value we read, so
    0 rows = someone else got it); on PostgreSQL the read skips rows that another
    worker has locked. On SQLite a writer conflict counts as a lost race."""
    now = now or timezone.now()
    for _ in range(CLAIM_RETRIES):
        try:
            with tenant_context(tenant_id):
                due = ProviderConfig.objects.filter(tenant_id=tenant_id, enabled=True, next_check_at__lte=now)
                due = due.order_by("next_check_at", "pk")
                if is_postgres():
                    due = due.select_for_update(skip_locked=True)
                config = due.first()
                if config is None:
                    return None
                lease = next_due(config.next_check_at, interval, now)
                won = ProviderConfig.objects.filter(pk=config.pk, next_check_at=config.next_check_at).update(
                    next_check_at=lease
                )
        except OperationalError as exc:  # SQLite: "database is locked" while another writer commits
            log.info("claim for tenant %s lost a write race: %s", tenant_id, exc)
            return None
        if won:
            config.next_check_at = lease
            return config
    return None


def claim_due(
    interval: float | None,
    limit: int,
    offset: int = 0,
    in_flight: Mapping[int, int] | None = None,
    reserved: int = 0,
) -> list[tuple[ProviderConfig, Thresholds]]:
    """Claim up to `limit` due providers across all tenants (Tenant is not under RLS),
    fairly: round robin, one provider per tenant per round, starting at tenant number
    `offset`, so a tenant with many due providers shares the free slots with the rest.

    Then each tenant's reserved slot: a tenant with nothing in flight (`in_flight`:
    probes running per tenant id) that got nothing in this call may claim one more,
    past `limit`, up to `reserved` such claims in all. However long another tenant's
    probes hang, a tenant's due probe therefore starts at the next poll."""
    tenants = list(Tenant.objects.all())
    if tenants:
        offset %= len(tenants)
        tenants = tenants[offset:] + tenants[:offset]
    in_flight = in_flight or {}
    claimed: list[tuple[ProviderConfig, Thresholds]] = []
    got: set[int] = set()
    done: set[int] = set()  # tenants with nothing (more) due

    def claim(tenant: Tenant) -> bool:
        config = claim_due_provider(tenant.pk, interval_for(tenant, interval))
        if config is None:
            done.add(tenant.pk)
            return False
        config.tenant = tenant  # the owner, for tenant-bound secrets, without a query on the loop
        claimed.append((config, breaker.thresholds_for(tenant)))
        got.add(tenant.pk)
        return True

    waiting = tenants
    while waiting and len(claimed) < limit:
        for tenant in waiting:
            if len(claimed) >= limit:
                break
            claim(tenant)
        waiting = [t for t in waiting if t.pk not in done]
    extra = 0
    for tenant in tenants:
        if extra >= reserved:
            break
        if tenant.pk in done or tenant.pk in got or in_flight.get(tenant.pk, 0):
            continue
        extra += claim(tenant)
    return claimed


# --- probing ---------------------------------------------------------------------------------


def probe_timeout(config: ProviderConfig, thresholds: Thresholds) -> float:
    return min(thresholds.probe_timeout_seconds, float(config.timeout_seconds or thresholds.probe_timeout_seconds))


async def probe(config: ProviderConfig, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> HealthProbe:
    """Run the adapter's health_check under a timeout. Never raises: a failure of any
    kind (bad config, connect error, timeout, adapter bug) is a failed probe whose
    error text has been scrubbed of keys."""
    timeout = probe_timeout(config, thresholds)
    started = time.monotonic()

    def elapsed() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        adapter = registry.build(config)
        async with asyncio.timeout(timeout):
            result = await adapter.health_check()
    except TimeoutError:
        return HealthProbe(ok=False, latency_ms=elapsed(), error=f"probe timed out after {timeout:g} s")
    except Exception as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        status_code = getattr(exc, "status_code", None)
        if status_code:
            message = f"HTTP {status_code}: {message}"
        return HealthProbe(
            ok=False, latency_ms=elapsed(), error=secrets.scrub(str(message))[:500], status_code=status_code
        )
    error = result.error or ""
    if not result.ok and result.status_code and not error.startswith("HTTP "):
        error = f"HTTP {result.status_code}: {error}".rstrip(": ")
    result.error = secrets.scrub(error)[:500]
    return result


def _next_status(config: ProviderConfig, recent: list[str], t: Thresholds, now: datetime) -> tuple[str, str]:
    """(status, source) after the newest probe result (recent[-1]).

    While traffic holds the circuit open, probes are stored but change nothing until the
    cooldown is over; then the first probe is the half-open trial: ok closes the circuit,
    a failure hands the provider over to probe hysteresis (still unhealthy)."""
    if config.health_status == UNHEALTHY and config.health_source == TRAFFIC:
        opened = config.health_changed_at or now
        if (now - opened).total_seconds() < t.circuit_cooldown_seconds:
            return UNHEALTHY, TRAFFIC
        if recent[-1] != UNHEALTHY:
            breaker.close_circuit(config.pk)
            return recent[-1], PROBE
        return UNHEALTHY, PROBE
    return derive_status(recent, t, current=config.health_status), PROBE


def record_probe(tenant_id: int, provider_id: int, result: HealthProbe, t: Thresholds) -> ProbeOutcome | None:
    """Store a probe's HealthResult and the provider's derived status; None if the
    provider was deleted meanwhile. No side effects beyond the database."""
    now = timezone.now()
    with tenant_context(tenant_id):
        config = ProviderConfig.objects.select_for_update().filter(tenant_id=tenant_id, pk=provider_id).first()
        if config is None:
            return None
        stored = HealthResult.objects.create(
            tenant_id=tenant_id,
            provider=config,
            status=observe(result.ok, result.latency_ms, t),
            latency_ms=result.latency_ms,
            error=result.error,
            checked_at=now,
            source=PROBE,
        )
        keep = max(t.failures_to_unhealthy, t.successes_to_healthy) + 1
        recent = HealthResult.objects.filter(provider_id=provider_id, source=PROBE).order_by("-checked_at", "-pk")
        statuses = list(recent.values_list("status", flat=True)[:keep])[::-1]
        status, source = _next_status(config, statuses, t, now)
        reason = CREDENTIALS_REJECTED if result.status_code in (401, 403) else ""
        if not reason and source == TRAFFIC:
            reason = config.health_reason  # the circuit still holds: the traffic's reason stands
        changed = status != config.health_status
        fields = {"last_checked_at": now, "health_status": status, "health_source": source, "health_reason": reason}
        if changed:
            fields["health_changed_at"] = now
        ProviderConfig.objects.filter(pk=provider_id).update(**fields)
        for name, value in fields.items():
            setattr(config, name, value)
    return ProbeOutcome(stored, config, changed)


def record_circuit_change(
    tenant_id: int, provider_id: int, opened: bool, detail: str, latency_ms: float | None = None
) -> ProviderConfig | None:
    """Persist a traffic circuit change (HealthResult source=traffic and the provider's
    status). Returns the provider, or None when nothing changed (deleted, or a close
    that a probe already made). No side effects beyond the database."""
    now = timezone.now()
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return None
    t = breaker.thresholds_for(tenant)
    with tenant_context(tenant_id):
        config = ProviderConfig.objects.select_for_update().filter(tenant_id=tenant_id, pk=provider_id).first()
        held_by_traffic = config is not None and (config.health_status, config.health_source) == (
            UNHEALTHY,
            TRAFFIC,
        )
        if config is None or (not opened and not held_by_traffic):
            return None
        status = UNHEALTHY if opened else HEALTHY
        HealthResult.objects.create(
            tenant_id=tenant_id,
            provider=config,
            status=status,
            latency_ms=latency_ms,
            error=secrets.scrub(detail)[:500] if opened else "",
            checked_at=now,
            source=TRAFFIC,
        )
        reason = CREDENTIALS_REJECTED if opened and detail.startswith(breaker.CREDENTIALS_REJECTED) else ""
        fields = {"health_status": status, "health_source": TRAFFIC, "health_changed_at": now, "health_reason": reason}
        if opened:  # the first probe after the cooldown is the half-open trial
            fields["next_check_at"] = min(config.next_check_at, now + timedelta(seconds=t.circuit_cooldown_seconds))
        ProviderConfig.objects.filter(pk=provider_id).update(**fields)
        for name, value in fields.items():
            setattr(config, name, value)
    return config


# --- telling the others ----------------------------------------------------------------------


def announce_status(config: ProviderConfig, source: str, changed: bool) -> None:
    """Send events.status_changed for the provider's status as stored in `config`."""
    events.status_changed.send(
        sender=None,
        tenant_id=config.tenant_id,
        provider_id=config.pk,
        status=config.health_status,
        source=source,
        changed=changed,
    )


async def _announce_on_loop(config: ProviderConfig) -> None:
    announce_status(config, TRAFFIC, changed=True)


def _persist_circuit_change(loop, tenant_id: int, provider_id: int, opened: bool, detail: str, latency_ms) -> None:
    config = record_circuit_change(tenant_id, provider_id, opened, detail, latency_ms)
    if config is None:
        return
    if loop is not None and loop.is_running():
        # Back to the loop the breaker ran on: the board's sockets and the in-memory
        # channel layer live there.
        db_thread.track(asyncio.run_coroutine_threadsafe(_announce_on_loop(config), loop))
    else:
        announce_status(config, TRAFFIC, changed=True)


def on_circuit_changed(sender, *, tenant_id: int, provider_id: int, opened: bool, detail: str, latency_ms=None, **kw):
    """Receiver of events.circuit_changed (the breaker, on the request path): store the
    change on the health DB thread, then announce it on the breaker's loop. The write
    never waits for that loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    db_thread.submit(_persist_circuit_change, loop, tenant_id, provider_id, opened, detail, latency_ms)


# --- one check, sync and async ------------------------------------------------------------------


async def acheck(config: ProviderConfig, thresholds: Thresholds) -> ProbeOutcome | None:
    """Probe, record, and announce the result with events.status_changed (the routing
    caches drop the tenant on a change; the board gets the card on every probe, which
    refreshes last check and metrics)."""
    result = await probe(config, thresholds)
    outcome = await db_thread.run_in_writer(record_probe, config.tenant_id, config.pk, result, thresholds)
    if outcome is None:
        return None
    if outcome.changed:
        log.info("provider %s (%s): %s", config.name, config.tenant_id, outcome.config.health_status)
    announce_status(outcome.config, PROBE, outcome.changed)
    return outcome


async def _probe_once(config: ProviderConfig, thresholds: Thresholds) -> HealthProbe:
    """probe() for sync callers; closes the pooled HTTP session if this call created it
    (async_to_sync outside a server runs on a throwaway loop)."""
    from providers.adapters import http

    had_session = asyncio.get_running_loop() in http._sessions
    try:
        return await probe(config, thresholds)
    finally:
        if not had_session:
            await http.close_session()


def check_now(config: ProviderConfig) -> HealthResult:
    """Probe one provider now (the API's health-check endpoint, the console's "check
    now" button): store and return the HealthResult. Raises ProviderNotFound if the
    provider is gone. Sync; the announcement goes out after commit."""
    tenant = config.tenant = Tenant.objects.get(pk=config.tenant_id)
    thresholds = breaker.thresholds_for(tenant)
    result = async_to_sync(_probe_once)(config, thresholds)
    outcome = record_probe(config.tenant_id, config.pk, result, thresholds)
    if outcome is None:
        raise ProviderNotFound(f"No provider named '{config.name}'.", {"name": config.name})
    transaction.on_commit(functools.partial(announce_status, outcome.config, PROBE, outcome.changed))
    return outcome.result
