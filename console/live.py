"""The live status board's publishing side: render a provider's card fragment once
and send it to the tenant's channel group, where StatusBoardConsumer forwards it to
every open board of that tenant (and no other).

The fragment is `console/_provider_card.html`, the same one the page renders, with
`id="provider-<pk>"`, so htmx's ws extension swaps it in place by id. Health code
never calls this module: it sends `events.status_changed`, and `on_status_changed`
(connected in ConsoleConfig.ready) queues the push.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.template.loader import render_to_string

from providers.models import ProviderConfig
from routing.health import db_thread
from tenants.rls import tenant_context
from usage.metrics import DEFAULT_WINDOW, WindowMetrics, window_metrics

log = logging.getLogger("axonflow.live")

STATUS_EVENT = "status.changed"
CARD_TEMPLATE = "console/_provider_card.html"


def group_name(tenant_id: int) -> str:
    return f"tenant-{tenant_id}-status"


def render_card(config: ProviderConfig, metrics: WindowMetrics | None = None, window: str = DEFAULT_WINDOW) -> str:
    return render_to_string(CARD_TEMPLATE, {"p": config, "m": metrics or WindowMetrics(), "window": window})


def card_html(tenant_id: int, provider_id: int, window: str = DEFAULT_WINDOW) -> str | None:
    """The provider's card as it is now, or None if it no longer exists. Queries the DB."""
    with tenant_context(tenant_id):
        config = ProviderConfig.objects.filter(tenant_id=tenant_id, pk=provider_id).first()
        if config is None:
            return None
        metrics = window_metrics(tenant_id, window, [provider_id]).get(provider_id)
    return render_card(config, metrics, window)


def snapshot(tenant_id: int, window: str = DEFAULT_WINDOW) -> list[str]:
    """Every card of the tenant, in board order (two queries)."""
    with tenant_context(tenant_id):
        configs = list(ProviderConfig.objects.filter(tenant_id=tenant_id))
        metrics = window_metrics(tenant_id, window)
    return [render_card(c, metrics.get(c.pk), window) for c in configs]


def _provider_id(provider: ProviderConfig | int) -> int:
    return provider if isinstance(provider, int) else provider.pk


async def apublish_html(tenant_id: int, html: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    await layer.group_send(group_name(tenant_id), {"type": STATUS_EVENT, "html": html})


async def apublish_status(tenant_id: int, provider: ProviderConfig | int) -> None:
    """Async publishers: render on the health DB thread, send on this loop."""
    html = await db_thread.run_in_writer(card_html, tenant_id, _provider_id(provider))
    if html is not None:
        await apublish_html(tenant_id, html)


def publish_status(tenant_id: int, provider: ProviderConfig | int) -> None:
    """Sync publishers (views, commands): render here and group_send through
    async_to_sync. A broken channel layer is logged, never raised: the status itself
    is already stored."""
    html = card_html(tenant_id, _provider_id(provider))
    if html is None:
        return
    try:
        async_to_sync(apublish_html)(tenant_id, html)
    except Exception:
        log.exception("could not publish the status of provider %s", _provider_id(provider))


def on_status_changed(sender, *, tenant_id: int, provider_id: int, **kwargs) -> None:
    """Receiver of events.status_changed: push the provider's fresh card to the tenant's
    boards, off the sender's path.

    Sent on an event loop (the probe loop; a circuit change handed back to the router's
    loop), the push runs on that loop, where the board's sockets and the in-memory
    channel layer live. Sent from a sync thread (a view's "check now", a command), it
    runs once the sender's transaction commits."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        transaction.on_commit(lambda: publish_status(tenant_id, provider_id))
        return
    db_thread.track(asyncio.run_coroutine_threadsafe(apublish_status(tenant_id, provider_id), loop))
