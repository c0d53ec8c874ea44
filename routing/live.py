"""The live status board's publishing side: render a provider's card fragment once
and send it to the tenant's channel group, where StatusBoardConsumer forwards it to
every open board of that tenant (and no other).

The fragment is `routing/_provider_card.html`, the same one the page renders, with
`id="provider-<pk>"`, so htmx's ws extension swaps it in place by id.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from routing.metrics import DEFAULT_WINDOW, WindowMetrics, window_metrics
from tenants.rls import tenant_context

if TYPE_CHECKING:
    from providers.models import ProviderConfig

log = logging.getLogger("axonflow.live")

STATUS_EVENT = "status.changed"
CARD_TEMPLATE = "routing/_provider_card.html"


def group_name(tenant_id: int) -> str:
    return f"tenant-{tenant_id}-status"


def render_card(config: ProviderConfig, metrics: WindowMetrics | None = None, window: str = DEFAULT_WINDOW) -> str:
    return render_to_string(CARD_TEMPLATE, {"p": config, "m": metrics or WindowMetrics(), "window": window})


def card_html(tenant_id: int, provider_id: int, window: str = DEFAULT_WINDOW) -> str | None:
    """The provider's card as it is now, or None if it no longer exists. Queries the DB."""
    from providers.models import ProviderConfig

    with tenant_context(tenant_id):
        config = ProviderConfig.objects.filter(tenant_id=tenant_id, pk=provider_id).first()
        if config is None:
            return None
        metrics = window_metrics(tenant_id, window, [provider_id]).get(provider_id)
    return render_card(config, metrics, window)


def snapshot(tenant_id: int, window: str = DEFAULT_WINDOW) -> list[str]:
    """Every card of the tenant, in board order (two queries)."""
    from providers.models import ProviderConfig

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
    """Async publishers: render on the health writer thread, send on this loop."""
    from routing.health import run_in_writer

    html = await run_in_writer(card_html, tenant_id, _provider_id(provider))
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
