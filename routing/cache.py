"""In-process routing cache: one snapshot per tenant (plan, store_prompts, every provider
config with its health, and the adapters built from them), so the completion hot path
reads no database for a known tenant.

Invalidation:
- routing/signals.py drops a tenant's snapshot when its ProviderConfig rows or the
  Tenant row are saved or deleted (at once, and again after the transaction commits so a
  reload racing the commit cannot keep the old rows);
- code that changes rows with queryset.update() (the health worker) calls
  `broadcast_invalidation(tenant_id)` itself;
- `broadcast_invalidation` also sends a message to a channel-layer group that every
  server process listens on (`listen_for_invalidations`, started from the ASGI
  lifespan), so all processes drop the snapshot. With the in-memory layer there is one
  process and the local drop is the whole job;
- every snapshot also expires after SNAPSHOT_TTL_SECONDS, a backstop for a missed
  message (a Redis blip), never the primary mechanism. The token cache has its own
  backstop, a generation number in Redis read once a second (tenants/authentication.py).

A generation counter per tenant keeps a load that started before an invalidation from
storing its (now stale) result.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from routing.retry import DEFAULT_POLICY, RetryPolicy, policy_for

if TYPE_CHECKING:
    from providers.adapters.base import Provider
    from providers.models import ProviderConfig

log = logging.getLogger("axonflow.cache")

SNAPSHOT_TTL_SECONDS = 15.0
GROUP = "axonflow-routing-cache"
EVENT = "cache.invalidate"
GROUP_REFRESH_SECONDS = 3600.0


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
    for config in configs:
        config.tenant = tenant  # adapters and pricing may look at the tenant; no extra query
    now = timezone.now()
    ttl = SNAPSHOT_TTL_SECONDS
    for config in configs:  # an operator state that expires sooner ends the snapshot then
        if config.operator_state_at(now) and config.operator_until is not None:
            ttl = min(ttl, (config.operator_until - now).total_seconds())
    snap = TenantSnapshot(
        tenant_id, tenant.slug, tenant.plan, tenant.store_prompts, configs, time.monotonic() + ttl, now,
        {name: tuple(t) for name, t in routes.items()},
        retry=policy_for(tenant.retry_settings, tenant_id),
    )
    with _lock:
        if _generations.get(tenant_id, 0) == generation:
            _snapshots[tenant_id] = snap
    return snap


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
    key = (id(loop), tenant_id)
    pending = _inflight.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future = _inflight[key] = loop.create_future()
    try:
        loader = load_snapshot if in_request else _load_outside_request
        snap = await sync_to_async(loader)(tenant_id)
        future.set_result(snap)
        return snap
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # mark retrieved: waiters re-raise it, nobody else has to
        raise
    finally:
        _inflight.pop(key, None)


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


def _shared_layer():
    """The channel layer when it reaches other processes (Redis), else None."""
    if not settings.REDIS_URL:
        return None
    from channels.layers import get_channel_layer

    return get_channel_layer()


def broadcast_invalidation(tenant_id: int | None, *, tokens: bool = False) -> None:
    """Drop the tenant's snapshot (None: every tenant; tokens: the token cache too) here
    and, through the channel layer, in every other process. Never raises."""
    message = {"type": EVENT, "tenant_id": tenant_id, "tokens": tokens}
    if tokens:
        from tenants.authentication import bump_generation

        bump_generation()  # for processes that miss the message below
    apply_invalidation(message)
    layer = _shared_layer()
    if layer is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            async_to_sync(layer.group_send)(GROUP, message)
        except Exception:
            log.warning(
                "cache invalidation broadcast failed; other processes catch up within %ss", SNAPSHOT_TTL_SECONDS
            )
        return
    task = asyncio.ensure_future(layer.group_send(GROUP, message))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def invalidate_on_commit(tenant_id: int | None, *, tokens: bool = False) -> None:
    """For signal handlers: drop now, and broadcast once the change is committed."""
    apply_invalidation({"tenant_id": tenant_id, "tokens": tokens})
    transaction.on_commit(lambda: broadcast_invalidation(tenant_id, tokens=tokens))


async def listen_for_invalidations() -> None:
    """Join the broadcast group and apply every message until cancelled (one per process).

    On a broken connection everything is dropped (messages may have been missed) and
    the listener rejoins."""
    layer = _shared_layer()
    if layer is None:
        return
    while True:
        try:
            channel = await layer.new_channel()
            await layer.group_add(GROUP, channel)
            while True:
                try:
                    message = await asyncio.wait_for(layer.receive(channel), GROUP_REFRESH_SECONDS)
                except TimeoutError:
                    await layer.group_add(GROUP, channel)  # group membership expires in channels_redis
                    continue
                if message.get("type") == EVENT:
                    apply_invalidation(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("cache invalidation listener lost the channel layer; rejoining", exc_info=True)
            apply_invalidation({"tenant_id": None, "tokens": True})  # messages may have been missed
            await asyncio.sleep(1.0)


_listener: asyncio.Task | None = None
_token_watch: asyncio.Task | None = None


async def start_invalidation_listener() -> None:
    """With a shared layer: the listener, and the token cache's generation watch."""
    global _listener, _token_watch
    if _shared_layer() is not None:
        from tenants.authentication import watch_generation

        _listener = asyncio.ensure_future(listen_for_invalidations())
        _token_watch = asyncio.ensure_future(watch_generation())


async def stop_invalidation_listener() -> None:
    global _listener, _token_watch
    for task in (_listener, _token_watch):
        if task is not None:
            task.cancel()
    _listener = _token_watch = None
