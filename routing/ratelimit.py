"""Rate limits: a token bucket per ProviderConfig.rate_limit (requests per minute; 0 =
unlimited), and one per tenant for Tenant.api_rate_limit (`check_tenant`: every API
request of the tenant, before it is routed).

The bucket holds up to `rate` tokens (one minute's budget, so a quiet provider may take
a burst of that size) and refills at rate/60 per second. `acquire` takes one token or
says how long until one is available; the router skips a provider that has none.

In-process by default. With REDIS_URL set, every application process shares one bucket
per provider in Redis: a Lua script reads, refills and takes atomically, using the Redis
server's clock so processes on different hosts agree. While Redis cannot be reached
(axonflow_site/shared.py: each call bounded by AXONFLOW_REDIS_TIMEOUT_SECONDS, then no
calls until the next retry) the same buckets are kept in this process instead: every
limit holds per process, so N processes admit up to N times the limit between them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from asgiref.sync import async_to_sync
from django.conf import settings

from axonflow_site import shared
from axonflow_site.errors import RateLimited

if TYPE_CHECKING:
    from tenants.authentication import TokenIdentity

log = logging.getLogger("axonflow.ratelimit")

KEY_PREFIX = "axonflow:rl:"

# KEYS[1] bucket; ARGV[1] capacity (= requests per minute). Returns milliseconds to wait
# for a token: 0 means one was taken. Times are ms since the epoch from Redis TIME;
# values are formatted explicitly because Lua's default number format keeps 14 digits.
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local per_ms = capacity / 60000.0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], 120000)
return wait
"""


class Limiter(Protocol):
    async def acquire(self, key: str, rate_per_minute: int) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        ...


class LocalLimiter:
    """Token buckets in this process's memory (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, rate_per_minute: int) -> float:
        if rate_per_minute <= 0:
            return 0.0
        capacity = float(rate_per_minute)
        per_second = capacity / 60.0
        with self._lock:
            now = self.clock()
            tokens, stamp = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + max(0.0, now - stamp) * per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / per_second

    async def acquire(self, key: str, rate_per_minute: int) -> float:
        return self.take(key, rate_per_minute)

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


class RedisLimiter:
    """Token buckets in Redis, shared by every process using the same server; buckets in
    this process (`local`) while the shared layer is down."""

    def __init__(self, url: str, prefix: str = KEY_PREFIX):
        self.url = url
        self.prefix = prefix
        self.local = LocalLimiter()
        self._script = None

    async def acquire(self, key: str, rate_per_minute: int) -> float:
        if rate_per_minute <= 0:
            return 0.0
        if not shared.usable():
            return self.local.take(key, rate_per_minute)
        client = shared.async_client(self.url)
        if self._script is None:
            self._script = client.register_script(TOKEN_BUCKET_LUA)
        try:
            wait_ms = await self._script(keys=[self.prefix + key], args=[int(rate_per_minute)], client=client)
        except Exception as exc:  # redis errors, connection refused, timeouts
            shared.failed(exc, "the rate limiter")
            return self.local.take(key, rate_per_minute)
        shared.succeeded()
        return int(wait_ms) / 1000.0

    async def close(self) -> None:
        await shared.aclose(self.url)


_limiter: Limiter | None = None


def get_limiter() -> Limiter:
    """The process's limiter: Redis-backed when REDIS_URL is set, else in-process."""
    global _limiter
    if _limiter is None:
        # Keys under the deployment's prefix ("axonflow:rl:" by default), as channels-redis's.
        prefix = f"{settings.CHANNEL_PREFIX}:rl:"
        _limiter = RedisLimiter(settings.REDIS_URL, prefix) if settings.REDIS_URL else LocalLimiter()
    return _limiter


def set_limiter(limiter: Limiter | None) -> None:
    """Replace the process's limiter (tests; None goes back to the default)."""
    global _limiter
    _limiter = limiter


# --- the tenant's API rate limit ------------------------------------------------------------


def tenant_limited(identity: TokenIdentity, wait: float) -> RateLimited:
    retry = max(1, math.ceil(wait))
    return RateLimited(
        f"This tenant's API rate limit of {identity.api_rate_limit} requests a minute is used up; "
        f"retry in {retry} s.",
        {"limit_per_minute": identity.api_rate_limit, "retry_after_seconds": retry},
        headers={"Retry-After": str(retry)},
    )


async def check_tenant(identity: TokenIdentity) -> None:
    """Take one request from the tenant's API budget (Tenant.api_rate_limit, carried by
    the cached token identity: no query). Raises RateLimited, with Retry-After, when none
    is left. Unlimited tenants (0) cost nothing."""
    if identity.api_rate_limit > 0:
        wait = await get_limiter().acquire(f"tenant:{identity.tenant_id}", identity.api_rate_limit)
        if wait > 0:
            raise tenant_limited(identity, wait)


def check_tenant_sync(identity: TokenIdentity) -> None:
    """`check_tenant` for sync views (run on a thread, never on the event loop)."""
    if identity.api_rate_limit > 0:
        limiter = get_limiter()
        key = f"tenant:{identity.tenant_id}"
        if isinstance(limiter, LocalLimiter):
            wait = limiter.take(key, identity.api_rate_limit)
        else:
            wait = async_to_sync(limiter.acquire)(key, identity.api_rate_limit)
        if wait > 0:
            raise tenant_limited(identity, wait)
