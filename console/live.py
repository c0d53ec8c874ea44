"""The live status board's publishing side: render a provider's card once per window
and send it to the tenant's channel group for that window, where StatusBoardConsumer
forwards it to every open board of that tenant (and no other).

The fragment is `console/_provider_card.html`, the same one the page renders, with
`id="provider-<pk>"`, so htmx's ws extension swaps it in place by id. Lower layers
never call this module: they send events (axonflow_site/events.py) and the receivers
at the bottom queue a publish.

Publishing runs off the sender's path, on the health DB thread: it renders the cards
(four queries per window, however many providers) and hands the group_send to the
event loop the board's sockets run on (the in-memory channel layer's groups live
there), or, with none in this process, to one long-lived publisher loop of its own
(channels-redis reaches the other processes and keeps its connection pool per loop).
Updates are coalesced per tenant; traffic updates at most once a second. Nothing is
rendered for a tenant without an open board: with the in-memory layer, none open in
this process; with Redis, no presence key (every open board keeps one alive there).
While Redis is away (axonflow_site/shared.py) presence is assumed and nothing is sent
through the channel layer: the boards show the banner of console/views/board.py and
catch up when they reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from axonflow_site import shared
from providers.models import HealthResult, ProviderConfig
from routing.health import db_thread
from tenants.rls import tenant_context
from usage.metrics import DEFAULT_WINDOW, WINDOWS, WindowMetrics, window_metrics, window_start

log = logging.getLogger("axonflow.live")

STATUS_EVENT = "status.changed"
CLOSE_EVENT = "board.revoked"
CARD_TEMPLATE = "console/_provider_card.html"
TRAFFIC_PUBLISH_SECONDS = 1.0
SPARK_WIDTH, SPARK_HEIGHT = 120, 28
PRESENCE_TTL_SECONDS = 60  # an open board refreshes its presence every third of this
PRESENCE_CHECK_SECONDS = 5.0  # how long a publisher trusts what it read


def group_name(tenant_id: int, window: str = DEFAULT_WINDOW) -> str:
    suffix = "" if window == DEFAULT_WINDOW else f"-{window}"
    return f"tenant-{tenant_id}-status{suffix}"


def member_group(user_id: int, tenant_id: int) -> str:
    """Every board a user has open on a tenant: closed when the membership ends."""
    return f"board-user-{user_id}-tenant-{tenant_id}"


# --- rendering ----------------------------------------------------------------------------------


def sparkline(points: list[float | None]) -> str:
    """SVG polyline points for the latency series (gaps skipped), or ""."""
    known = [p for p in points if p is not None]
    if len(known) < 2:
        return ""
    top = max(known) or 1.0
    step = SPARK_WIDTH / max(1, len(points) - 1)
    return " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 2 - (p / top) * (SPARK_HEIGHT - 4):.1f}"
        for i, p in enumerate(points)
        if p is not None
    )


def rate(failed: int, total: int) -> float | None:
    return failed / total if total else None


def render_card(
    config: ProviderConfig,
    metrics: WindowMetrics | None = None,
    window: str = DEFAULT_WINDOW,
    probes: tuple[int, int] = (0, 0),
    now=None,
) -> str:
    metrics = metrics or WindowMetrics()
    context = {
        "p": config,
        "m": metrics,
        "window": window,
        "operator_state": config.operator_state_at(now or timezone.now()),
        "probe_error_rate": rate(probes[1], probes[0]),
        "probe_count": probes[0],
        "traffic_error_rate": metrics.error_rate,
        "spark": sparkline(metrics.latency_series),
    }
    return render_to_string(CARD_TEMPLATE, context)


def cards(tenant_id: int, window: str = DEFAULT_WINDOW, provider_ids=None) -> dict[int, str]:
    """{provider id: card html} in board order (all providers, or those named)."""
    now = timezone.now()
    with tenant_context(tenant_id):
        configs = ProviderConfig.objects.filter(tenant_id=tenant_id)
        if provider_ids is not None:
            configs = configs.filter(pk__in=list(provider_ids))
        configs = list(configs)
        ids = [c.pk for c in configs]
        metrics = window_metrics(tenant_id, window, ids, now) if ids else {}
        probes = HealthResult.objects.probe_counts(tenant_id, window_start(window, now)) if ids else {}
    return {c.pk: render_card(c, metrics.get(c.pk), window, probes.get(c.pk, (0, 0)), now) for c in configs}


def snapshot(tenant_id: int, window: str = DEFAULT_WINDOW) -> list[str]:
    """Every card of the tenant, in board order."""
    return list(cards(tenant_id, window).values())


def card_html(tenant_id: int, provider_id: int, window: str = DEFAULT_WINDOW) -> str | None:
    """The provider's card as it is now, or None if it no longer exists. Queries the DB."""
    return cards(tenant_id, window, [provider_id]).get(provider_id)


def whole_board(cards_html: list[str]) -> str:
    """Every card, replacing the board's content: how a new provider appears (an append
    would duplicate a card that a board connecting at that moment already has)."""
    return f'<section id="board" hx-swap-oob="innerHTML">{"".join(cards_html)}</section>'


def removed(provider_id: int) -> str:
    return f'<article id="provider-{provider_id}" hx-swap-oob="delete"></article>'


# --- where the boards are --------------------------------------------------------------------------

_board_loop: asyncio.AbstractEventLoop | None = None
_open_boards: dict[int, int] = defaultdict(int)  # tenant id -> sockets open in this process


def board_opened(tenant_id: int) -> None:
    """StatusBoardConsumer.connect: remember the loop the sockets run on."""
    global _board_loop
    _board_loop = asyncio.get_running_loop()
    _open_boards[tenant_id] += 1


def board_closed(tenant_id: int) -> None:
    _open_boards[tenant_id] = max(0, _open_boards[tenant_id] - 1)


def open_boards(tenant_id: int | None = None) -> int:
    return sum(_open_boards.values()) if tenant_id is None else _open_boards[tenant_id]


def anyone_listening(tenant_id: int) -> bool:
    """Whether a board of the tenant may be open anywhere: one in this process, or (with
    Redis) a live presence entry from another. With Redis it reads the presence at most
    every PRESENCE_CHECK_SECONDS (a blocking call: run it off the event loop)."""
    if _open_boards[tenant_id] > 0:
        return True
    if not settings.REDIS_URL:
        return False
    checked = _presence.get(tenant_id)
    if checked is None or checked[0] < time.monotonic():
        present = True  # Redis away: publish anyway, a board must not go stale
        if shared.usable():
            try:
                key = presence_key(tenant_id)
                pipe = _redis().pipeline()
                pipe.zremrangebyscore(key, "-inf", time.time())  # boards that stopped refreshing
                pipe.zcard(key)
                present = bool(pipe.execute()[1])
                shared.succeeded()
            except Exception as exc:
                shared.failed(exc, "the board presence check")
        checked = _presence[tenant_id] = (time.monotonic() + PRESENCE_CHECK_SECONDS, present)
    return checked[1]


_presence: dict[int, tuple[float, bool]] = {}


def _redis():
    return shared.sync_client()


def presence_key(tenant_id: int) -> str:
    """A sorted set per tenant: each open board's channel name, scored by when its
    presence lapses unless refreshed."""
    return f"{settings.CHANNEL_PREFIX}:boards-open:{tenant_id}"


def mark_board_open(tenant_id: int, channel_name: str) -> None:
    """Keep this board's presence alive (StatusBoardConsumer, from a thread). Skipped
    while Redis is away (publishers assume presence then)."""
    if shared.usable():
        key = presence_key(tenant_id)
        pipe = _redis().pipeline()
        pipe.zadd(key, {channel_name: time.time() + PRESENCE_TTL_SECONDS})
        pipe.expire(key, PRESENCE_TTL_SECONDS)
        _reporting(pipe.execute, "the board presence")


def mark_board_closed(tenant_id: int, channel_name: str) -> None:
    if shared.usable():
        _reporting(lambda: _redis().zrem(presence_key(tenant_id), channel_name), "the board presence")


def _reporting(call, what: str):
    """Make a Redis call, telling axonflow_site/shared.py how it went; re-raises."""
    try:
        result = call()
    except Exception as exc:
        shared.failed(exc, what)
        raise
    shared.succeeded()
    return result


# --- sending ---------------------------------------------------------------------------------------


async def asend(group: str, message: dict) -> None:
    """Send to the group; with Redis, only while it is reachable (bounded by its timeout)."""
    layer = get_channel_layer()
    if layer is None:
        return
    if not settings.REDIS_URL:
        await layer.group_send(group, message)
        return
    if not shared.usable():
        return  # the boards reconnect and get every card once it is back
    try:
        await asyncio.wait_for(layer.group_send(group, message), settings.AXONFLOW_REDIS_TIMEOUT_SECONDS)
    except Exception as exc:
        shared.failed(exc, "the board's channel layer")
        return
    shared.succeeded()


def send(group: str, message: dict) -> None:
    """From a sync thread: on the boards' loop when it runs in this process, else on the
    publisher loop (Redis carries it to the other processes). A broken channel layer is
    logged, never raised: what the board shows is stored."""
    loop = _board_loop
    if loop is None or not loop.is_running():
        if not settings.REDIS_URL:
            return  # the in-memory layer with no board in this process: nobody to tell
        loop = _publisher_loop()
    db_thread.track(asyncio.run_coroutine_threadsafe(asend(group, message), loop))


_publisher: asyncio.AbstractEventLoop | None = None
_publisher_lock = threading.Lock()


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """A daemon thread's event loop for sends from processes without a board (the health
    worker, a command): one loop, so channels-redis keeps one pool for it."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="axonflow-board-publisher", daemon=True).start()
            _publisher = loop
        return _publisher


def publish_now(tenant_id: int, provider_ids: set[int], created: set[int], deleted: set[int]) -> None:
    """Render the cards once per window and send them (sync; the health DB thread)."""
    for window in WINDOWS:
        group = group_name(tenant_id, window)
        if created:
            send(group, {"type": STATUS_EVENT, "html": whole_board(snapshot(tenant_id, window))})
            continue
        rendered = cards(tenant_id, window, provider_ids) if provider_ids else {}
        for provider_id in provider_ids:
            html = rendered.get(provider_id)
            if html is None:
                deleted.add(provider_id)  # gone meanwhile
                continue
            send(group, {"type": STATUS_EVENT, "html": html})
        for provider_id in deleted:
            send(group, {"type": STATUS_EVENT, "html": removed(provider_id)})


# Coalescing: what is waiting to be published per tenant, and whether a publish is queued.
_lock = threading.Lock()
_dirty: dict[int, set[int]] = defaultdict(set)
_created: dict[int, set[int]] = defaultdict(set)
_deleted: dict[int, set[int]] = defaultdict(set)
_queued: set[int] = set()
_last_traffic: dict[int, float] = {}
_timers: set[threading.Timer] = set()


def schedule(tenant_id: int, provider_ids, *, created=(), deleted=(), traffic: bool = False) -> None:
    """Queue a publish of these providers' cards; returns at once, from any thread.

    Status and configuration changes go out at once; traffic updates at most once per
    TRAFFIC_PUBLISH_SECONDS per tenant (the rest wait for the next)."""
    if not settings.REDIS_URL and not _open_boards[tenant_id]:
        return  # the in-memory layer: nobody here, nobody anywhere
    with _lock:
        _dirty[tenant_id].update(provider_ids)
        _created[tenant_id].update(created)
        _deleted[tenant_id].update(deleted)
        if tenant_id in _queued:
            return
        _queued.add(tenant_id)
    delay = 0.0
    if traffic:
        delay = max(0.0, _last_traffic.get(tenant_id, 0.0) + TRAFFIC_PUBLISH_SECONDS - time.monotonic())
    if delay > 0:
        timer = threading.Timer(delay, _submit_later, (tenant_id,))
        timer.daemon = True
        _timers.add(timer)
        timer.start()
    else:
        db_thread.submit(_publish_queued, tenant_id)


def _submit_later(tenant_id: int) -> None:
    _timers.difference_update({t for t in _timers if not t.is_alive() or t is threading.current_thread()})
    db_thread.submit(_publish_queued, tenant_id)


def reset() -> None:
    """Forget queued publishes and open-board counts (tests, between cases)."""
    global _board_loop
    for timer in list(_timers):
        timer.cancel()
    with _lock:
        _timers.clear()
        _dirty.clear(), _created.clear(), _deleted.clear(), _queued.clear()
        _last_traffic.clear()
        _open_boards.clear()
        _presence.clear()
    _board_loop = None


def _publish_queued(tenant_id: int) -> None:
    with _lock:
        _queued.discard(tenant_id)
        deleted = _deleted.pop(tenant_id, set())
        ids = _dirty.pop(tenant_id, set()) - deleted
        created = _created.pop(tenant_id, set())
    _last_traffic[tenant_id] = time.monotonic()
    if anyone_listening(tenant_id):
        publish_now(tenant_id, ids, created, deleted)


def close_boards_of(user_id: int, tenant_id: int) -> None:
    """Close every board `user_id` has open on the tenant (their membership ended)."""
    send(member_group(user_id, tenant_id), {"type": CLOSE_EVENT})


# --- receivers (connected in ConsoleConfig.ready) --------------------------------------------------


def on_status_changed(sender, *, tenant_id: int, provider_id: int, **kwargs) -> None:
    """events.status_changed: a probe or a circuit change; every probe refreshes the card."""
    _after_commit(lambda: schedule(tenant_id, {provider_id}))


def on_provider_changed(sender, *, tenant_id: int, provider_id: int, created=False, deleted=False, **kwargs) -> None:
    """events.provider_changed: an edit, an operator state, a new or deleted provider."""
    _after_commit(
        lambda: schedule(
            tenant_id,
            set() if deleted else {provider_id},
            created={provider_id} if created else (),
            deleted={provider_id} if deleted else (),
        )
    )


def on_usage_recorded(sender, *, tenant_id: int, provider_ids, **kwargs) -> None:
    """events.usage_recorded: the usage writer stored a batch; the metrics moved."""
    schedule(tenant_id, provider_ids, traffic=True)


def on_membership_deleted(sender, instance, **kwargs) -> None:
    """A member removed from a tenant stops receiving that tenant's frames at once."""
    user_id, tenant_id = instance.user_id, instance.tenant_id
    _after_commit(lambda: close_boards_of(user_id, tenant_id))


def _after_commit(action) -> None:
    """Run `action` once the sender's transaction commits (at once outside one). On an
    event loop there is no transaction of ours to wait for."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        transaction.on_commit(action)
        return
    action()
