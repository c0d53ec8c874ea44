"""In-process routing cache: one snapshot per tenant (plan, store_prompts, every provider
config with its health, and the adapters built from them), so the completion hot path
reads no database for a known tenant.

Invalidation:
- routing/signals.py drops a tenant's snapshot when its ProviderConfig rows or the
  Tenant row are saved or deleted (at once, and again after the transaction commits so a
  reload racing the commit cannot keep the old rows);
- code that changes rows with queryset.update() (the health worker) calls
  `broadcast_invalidation(tenant_id)` itself;
- `broadcast_invalidation` also tells every other server process through Redis
  (routing/peers.py), so all processes drop the snapshot. From sync code (a committed
  change from the API, the console, the admin or a command) it returns only once every
  listening process has applied it (or after peers.ACK_TIMEOUT_SECONDS): the next
  request anywhere sees the change. Without REDIS_URL there is one process and the local
  drop is the whole job;
- every snapshot also expires after SNAPSHOT_TTL_SECONDS, a backstop for a missed
  message (a Redis blip), never the primary mechanism. The token cache has its own
  backstop, a generation number in Redis read once a second (tenants/authentication.py).

A generation counter per tenant keeps a load that started before an invalidation from
storing its (now stale) result.

Degradation (docs/reliability.md): while Redis is away (axonflow_site/shared.py) other
processes' changes cannot reach this one, so new snapshots live DEGRADED_TTL_SECONDS.
While the database is away, a snapshot that expired is still served, for at most
AXONFLOW_STALE_IF_ERROR_SECONDS past its expiry, and reloaded at most every
STALE_RETRY_SECONDS meanwhile (stale-if-error; logged once a minute). A dropped
(invalidated) snapshot is never served stale.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction
from django.utils import timezone

from axonflow_site import shared
from routing import peers
from routing.retry import DEFAULT_POLICY, RetryPolicy, policy_for

if TYPE_CHECKING:
    from providers.adapters.base import Provider
    from providers.models import ProviderConfig

log = logging.getLogger("axonflow.cache")

SNAPSHOT_TTL_SECONDS = 15.0
DEGRADED_TTL_SECONDS = 5.0
STALE_RETRY_SECONDS = 5.0


@dataclass(slots=True)
class TenantSnapshot:
    tenant_id: int
    slug: str
    plan: str
    store_prompts: bool
    configs: tuple[ProviderConfig, ...]  # every provider, enabled or not
    expires: float
    loaded_at: datetime = field(default_factory=timezone.now)
    # Model routes: name -> ((provider id, upstream model, weight), ...), in target order.
    routes: dict[str, tuple[tuple[int, str, int], ...]] = field(default_factory=dict)
    by_name: dict[str, ProviderConfig] = field(default_factory=dict)
    # Served model name -> ids of the providers whose `model` or `models` include it.
    served: dict[str, tuple[int, ...]] = field(default_factory=dict)
    candidates: list | None = None  # routing.router.candidates_of fills it once
    pools: dict = field(default_factory=dict)  # routing.pool caches each resolved name
    pool_candidates: dict = field(default_factory=dict)  # routing.router, per (pool, needs)
    retry: RetryPolicy = DEFAULT_POLICY  # the tenant's (routing/retry.py)
    stale_until: float = 0.0  # monotonic: how long it may be served while the database is away
    budgets: tuple = ()  # the enabled budgets (usage.budgets.Rule), the tenant's and its tokens'
    _adapters: dict[int, Provider] = field(default_factory=dict)
    _features: dict[int, frozenset[str] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {c.name: c for c in self.configs}
        served: dict[str, list[int]] = {}
        for config in self.configs:
            for model in (config.model, *(config.models or ())):
                if model and config.pk not in served.setdefault(model, []):
                    served[model].append(config.pk)
        self.served = {model: tuple(pks) for model, pks in served.items()}

    @property
    def enabled(self) -> list[ProviderConfig]:
        return [c for c in self.configs if c.enabled]

    def licensed(self, config: ProviderConfig) -> bool:
        """Whether the tenant's plan covers the config's type: after a downgrade the
        router stops at once (the Tenant save drops this snapshot; routing/signals.py)."""
        from providers.licensing import PLAN_TYPES

        return config.type in PLAN_TYPES.get(self.plan, frozenset())

    def features(self, config: ProviderConfig) -> frozenset[str] | None:
        """What the provider's adapter can do (chat.py names), once per snapshot; None
        when the adapter cannot be built (the attempt itself will report why)."""
        if config.pk not in self._features:
            from axonflow_site.errors import AxonFlowError

            try:
                adapter = self.adapter(config)
            except AxonFlowError:
                adapter = None
            # A factory's Provider may predate capabilities: it is offered everything.
            capabilities = getattr(adapter, "capabilities", None)
            self._features[config.pk] = capabilities().features if capabilities else None
        return self._features[config.pk]

    def adapter(self, config: ProviderConfig) -> Provider:
        """The adapter for `config`, built once per snapshot (i.e. per config version).

        Raises InvalidConfig when the type or factory cannot be built."""
        adapter = self._adapters.get(config.pk)
        if adapter is None:
            from providers.registry import build

            adapter = self._adapters[config.pk] = build(config)
        return adapter


_snapshots: dict[int, TenantSnapshot] = {}
_generations: dict[int, int] = {}
_lock = threading.Lock()
_inflight: dict[tuple[int, int], asyncio.Future] = {}


def cached_snapshot(tenant_id: int) -> TenantSnapshot | None:
    """The live cached snapshot, or None (absent or expired). Never touches the DB."""
    snap = _snapshots.get(tenant_id)
    if snap is not None and snap.expires > time.monotonic():
        return snap
    return None


def load_snapshot(tenant_id: int) -> TenantSnapshot:
    """Read the tenant and its providers (inside its RLS context) and cache the result.

    Sync: call through sync_to_async from async code. Raises Tenant.DoesNotExist."""
    from providers.models import ModelRoute, ProviderConfig
    from tenants.models import Tenant
    from tenants.rls import tenant_context

    generation = _generations.get(tenant_id, 0)
    with tenant_context(tenant_id):
        tenant = Tenant.objects.get(pk=tenant_id)
        configs = tuple(ProviderConfig.objects.filter(tenant_id=tenant_id).order_by("-priority", "name"))
        # One query (a LEFT JOIN): a route without targets still resolves, to an empty pool.
        rows = ModelRoute.objects.filter(tenant_id=tenant_id).order_by("name", "targets__position", "targets__pk")
        routes: dict[str, list[tuple[int, str, int]]] = {}
        for name, pk, model, weight in rows.values_list(
            "name", "targets__provider_id", "targets__model", "targets__weight"
        ):
            targets = routes.setdefault(name, [])
            if pk is not None:
                targets.append((pk, model, weight))
        budgets = budget_rules(tenant_id, tenant.time_zone)
    for config in configs:
        config.tenant = tenant  # adapters and pricing may look at the tenant; no extra query
    now = timezone.now()
    ttl = DEGRADED_TTL_SECONDS if shared.degraded() else SNAPSHOT_TTL_SECONDS
    for config in configs:  # an operator state that expires sooner ends the snapshot then
        if config.operator_state_at(now) and config.operator_until is not None:
            ttl = min(ttl, (config.operator_until - now).total_seconds())
    expires = time.monotonic() + ttl
    snap = TenantSnapshot(
        tenant_id, tenant.slug, tenant.plan, tenant.store_prompts, configs, expires, now,
        {name: tuple(t) for name, t in routes.items()},
        retry=policy_for(tenant.retry_settings, tenant_id),
        stale_until=expires + settings.AXONFLOW_STALE_IF_ERROR_SECONDS,
        budgets=budgets,
    )
    with _lock:
        if _generations.get(tenant_id, 0) == generation:
            _snapshots[tenant_id] = snap
    return snap


def budget_rules(tenant_id: int, time_zone: str) -> tuple:
    """The tenant's enabled budgets as the request path needs them (inside its RLS context)."""
    from usage.budgets import Rule, to_units
    from usage.models import Budget

    return tuple(
        Rule(b.pk, tenant_id, b.name, b.token_id, b.period, None if b.limit_usd is None else to_units(b.limit_usd),
             b.limit_tokens, b.soft_percent, time_zone)  # fmt: skip
        for b in Budget.objects.filter(tenant_id=tenant_id, enabled=True).order_by("name")
    )


def _load_outside_request(tenant_id: int) -> TenantSnapshot:
    # Called on asgiref's shared sync thread by the lean /v1 handler: no Django request
    # cycle closes connections there, so do what request_started/finished would.
    close_old_connections()
    try:
        return load_snapshot(tenant_id)
    finally:
        close_old_connections()


async def get_snapshot(tenant_id: int, *, in_request: bool = True) -> TenantSnapshot:
    """The tenant's snapshot: cached, or loaded once however many requests ask at once.

    `in_request=False` for callers outside Django's request cycle (the lean ASGI handler)."""
    snap = cached_snapshot(tenant_id)
    if snap is not None:
        return snap
    loop = asyncio.get_running_loop()
    # A load that began before an invalidation is not shared with requests after it.
    key = (id(loop), tenant_id, _generations.get(tenant_id, 0))
    pending = _inflight.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future = _inflight[key] = loop.create_future()
    try:
        loader = load_snapshot if in_request else _load_outside_request
        try:
            snap = await sync_to_async(loader)(tenant_id)
        except (OperationalError, InterfaceError) as exc:  # the database is away
            snap = stale_snapshot(tenant_id, exc)
            if snap is None:
                raise
        future.set_result(snap)
        return snap
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # mark retrieved: waiters re-raise it, nobody else has to
        raise
    finally:
        _inflight.pop(key, None)


_stale_warned_at = -1e9


def stale_snapshot(tenant_id: int, exc: Exception) -> TenantSnapshot | None:
    """The tenant's expired snapshot while reloading it failed (`exc`), if it is within
    its `stale_until`; it then counts as live for STALE_RETRY_SECONDS more (not past
    `stale_until`), so one reload per tenant tries the database in that time. None if
    there is none (never loaded, or dropped by an invalidation) or it is too old."""
    global _stale_warned_at
    now = time.monotonic()
    with _lock:
        snap = _snapshots.get(tenant_id)
        if snap is None or snap.stale_until <= now:
            return None
        snap.expires = min(now + STALE_RETRY_SECONDS, snap.stale_until)
    if now - _stale_warned_at > 60:
        _stale_warned_at = now
        log.warning("the database cannot be reached (%s); routing tenant %s on its snapshot of %.0f s ago "
                    "(snapshots are kept up to %.0f s past their expiry; said once a minute)", type(exc).__name__,
                    tenant_id, (timezone.now() - snap.loaded_at).total_seconds(),
                    settings.AXONFLOW_STALE_IF_ERROR_SECONDS)  # fmt: skip
    return snap


def invalidate_tenant(tenant_id: int) -> None:
    """Drop this process's cached snapshot of the tenant."""
    with _lock:
        _generations[tenant_id] = _generations.get(tenant_id, 0) + 1
        _snapshots.pop(tenant_id, None)


def invalidate_all() -> None:
    with _lock:
        for tenant_id in list(_snapshots) + list(_generations):
            _generations[tenant_id] = _generations.get(tenant_id, 0) + 1
        _snapshots.clear()


def apply_invalidation(message: dict) -> None:
    """Act on one broadcast message (also used by the local path)."""
    tenant_id = message.get("tenant_id")
    if message.get("tokens"):
        from tenants.authentication import forget_tokens

        forget_tokens()
    if tenant_id is None:
        invalidate_all()
    else:
        invalidate_tenant(int(tenant_id))


def broadcast_invalidation(tenant_id: int | None, *, tokens: bool = False) -> None:
    """Drop the tenant's snapshot (None: every tenant; tokens: the token cache too) here
    and in every other process (routing/peers.py; from sync code, applied there before
    this returns). Never raises."""
    message = {"tenant_id": tenant_id, "tokens": tokens}
    if tokens:
        from tenants.authentication import bump_generation

        bump_generation()  # for processes that miss the message below
    apply_invalidation(message)
    peers.publish("invalidate", message, wait=True)


def invalidate_on_commit(tenant_id: int | None, *, tokens: bool = False) -> None:
    """For signal handlers: drop now, and broadcast once the change is committed."""
    apply_invalidation({"tenant_id": tenant_id, "tokens": tokens})
    transaction.on_commit(lambda: broadcast_invalidation(tenant_id, tokens=tokens))


_listener: asyncio.Task | None = None
_token_watch: asyncio.Task | None = None


async def start_invalidation_listener() -> None:
    """With Redis: the listener for the other processes' messages (routing/peers.py:
    invalidations and circuit changes), and the token cache's generation watch."""
    global _listener, _token_watch
    if settings.REDIS_URL:
        from tenants.authentication import watch_generation

        _listener = asyncio.ensure_future(peers.listen())
        _token_watch = asyncio.ensure_future(watch_generation())


async def stop_invalidation_listener() -> None:
    global _listener, _token_watch
    for task in (_listener, _token_watch):
        if task is not None:
            task.cancel()
    _listener = _token_watch = None
