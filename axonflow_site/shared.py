"""The shared layer: Redis (REDIS_URL), which lets several application processes behave
as one (SPEC §5). No request needs it: every caller has an in-process fallback, and this
module says when to use it (docs/reliability.md, "When Redis or the database is away").

A circuit breaker around Redis, one per process. A caller asks `usable()` before a
call and reports how it went (`succeeded()`, `failed(exc, what)`). The first failure
marks the layer down (logged once, with what now runs per process); while it is down,
callers take their fallback without touching Redis, and one call every
AXONFLOW_REDIS_RETRY_SECONDS is let through as the trial, so a Redis that returns is
noticed by itself (logged once). The clients below bound each call by
AXONFLOW_REDIS_TIMEOUT_SECONDS (socket timeouts, no retries): an unreachable Redis,
refusing or silent, costs one request at most that long per retry interval.

The callers and their fallbacks:
- routing/ratelimit.py: in-process token buckets (every limit becomes per process);
- routing/cache.py: invalidation stays local and snapshots live a shorter time;
- tenants/authentication.py: the token generation is not read; tokens are cached briefly;
- console/live.py: board presence is assumed and pushes to the channel layer are skipped.

`state()` is what the status board and GET /api/v1/status/ show. Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

if TYPE_CHECKING:
    import redis
    import redis.asyncio

log = logging.getLogger("axonflow.shared")

_lock = threading.Lock()
_down_since: datetime | None = None  # wall clock, for people; None while up
_down_at = 0.0  # monotonic, for the "after N s" in the log
_retry_at = 0.0  # monotonic: when the next trial call may go through
_sync_clients: dict[str, redis.Redis] = {}
_async_clients: dict[tuple[asyncio.AbstractEventLoop, str], redis.asyncio.Redis] = {}


def configured() -> bool:
    """Whether REDIS_URL is set (without it there is one process and nothing to share)."""
    return bool(settings.REDIS_URL)


def shared_layer_up() -> bool:
    """Whether Redis is configured and answered the last call made to it."""
    return _down_since is None and configured()


def degraded() -> bool:
    """Configured but unreachable: the callers run on their fallbacks."""
    return _down_since is not None and configured()


def usable() -> bool:
    """Whether to call Redis now: configured and up, or down with the retry due (this
    caller makes the trial; the others keep their fallback until it reports)."""
    global _retry_at
    if _down_since is None:
        return configured()
    now = time.monotonic()
    if now < _retry_at:
        return False
    with _lock:
        if _down_since is not None and now < _retry_at:
            return False
        _retry_at = now + settings.AXONFLOW_REDIS_RETRY_SECONDS
    return configured()


def succeeded() -> None:
    """A Redis call answered: the layer is up (logged once when it was down)."""
    global _down_since
    if _down_since is None:  # the hot path: one read
        return
    with _lock:
        if _down_since is None:
            return
        down_for = time.monotonic() - _down_at
        _down_since = None
    log.warning("shared layer (Redis) reachable again after %.0f s; limits and invalidation are shared again", down_for)


def failed(exc: BaseException, what: str) -> None:
    """A Redis call failed or timed out (`what` names the caller, for the log): the
    layer is down until a trial call succeeds. Logged once per outage."""
    global _down_since, _down_at, _retry_at
    with _lock:
        _retry_at = time.monotonic() + settings.AXONFLOW_REDIS_RETRY_SECONDS
        if _down_since is not None:
            return
        _down_since, _down_at = timezone.now(), time.monotonic()
    log.warning(
        "shared layer (Redis) unreachable (%s in %s): rate limits are per process, cache and token changes "
        "reach other processes only when their short TTLs expire; retrying every %s s",
        type(exc).__name__, what, settings.AXONFLOW_REDIS_RETRY_SECONDS,
    )  # fmt: skip


def state() -> dict:
    """{"configured", "up", "down_since"} for the board and the status API."""
    down_since = _down_since if configured() else None
    return {"configured": configured(), "up": shared_layer_up(), "down_since": down_since}


def check() -> dict:
    """`state()`, after one PING when the layer is down and its retry is due (sync
    views: the board, the status API), so a returning Redis shows without traffic."""
    if degraded() and usable():
        try:
            sync_client().ping()
            succeeded()
        except Exception as exc:
            failed(exc, "status check")
    return state()


def reset() -> None:
    """Forget the state (tests): up, no trial pending."""
    global _down_since, _retry_at
    with _lock:
        _down_since, _retry_at = None, 0.0


# --- clients: bounded calls, no retries -------------------------------------------------------


def _client_options() -> dict:
    from redis.backoff import NoBackoff

    timeout = settings.AXONFLOW_REDIS_TIMEOUT_SECONDS
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "backoff": NoBackoff()}


def sync_client(url: str | None = None) -> redis.Redis:
    """A blocking client for `url` (default REDIS_URL), one per URL, for threads."""
    import redis
    from redis.retry import Retry

    url = url or settings.REDIS_URL
    client = _sync_clients.get(url)
    if client is None:
        options = _client_options()
        client = _sync_clients[url] = redis.Redis.from_url(
            url, socket_timeout=options["socket_timeout"], socket_connect_timeout=options["socket_connect_timeout"],
            retry=Retry(options["backoff"], 0),
        )  # fmt: skip
    return client


def async_client(url: str | None = None) -> redis.asyncio.Redis:
    """An asyncio client for `url` (default REDIS_URL), one per URL and event loop:
    redis.asyncio's pools are bound to the loop that made them."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry

    url = url or settings.REDIS_URL
    loop = asyncio.get_running_loop()
    client = _async_clients.get((loop, url))
    if client is None:
        for stale in [key for key in _async_clients if key[0].is_closed()]:
            _async_clients.pop(stale, None)
        options = _client_options()
        client = _async_clients[(loop, url)] = aredis.from_url(
            url, socket_timeout=options["socket_timeout"], socket_connect_timeout=options["socket_connect_timeout"],
            retry=Retry(options["backoff"], 0),
        )  # fmt: skip
    return client


async def aclose(url: str | None = None) -> None:
    """Close this loop's client for `url` (tests, shutdown)."""
    client = _async_clients.pop((asyncio.get_running_loop(), url or settings.REDIS_URL), None)
    if client is not None:
        await client.aclose()
