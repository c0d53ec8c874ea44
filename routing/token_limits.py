"""Per API token limits: requests per minute and tokens per minute (ApiToken.rpm_limit,
tpm_limit; 0 = none), over a sliding minute, answering 429 rate_limited with
Retry-After (docs/budgets.md).

A sliding window rather than the providers' token bucket (routing/ratelimit.py): "30 a
minute" means at most 30 in any 60 seconds, exactly, however they are spread, which a
bucket refilling while a burst is served does not give. With REDIS_URL the window is a
sorted set per token in Redis, checked and added to by one Lua script (exact across
every process, on the Redis server's clock); otherwise the same in this process.

Tokens per minute count each request's estimate when it is admitted (the prompt
estimated, plus its max_tokens or AXONFLOW_BUDGET_DEFAULT_MAX_TOKENS) and are corrected
to its actual tokens when it ends (`correct`).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
from collections import deque

from django.conf import settings

from axonflow_site.errors import RateLimited

WINDOW_MS = 60_000

# KEYS[1] the window; ARGV: limit, weight of this request (1 for requests, its tokens
# for tokens), member id. Members are "id:weight"; the script sums the weights in the
# last minute. Returns 0 when admitted, else the ms until enough of the window has passed.
SLIDING_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
local limit, weight = tonumber(ARGV[1]), tonumber(ARGV[2])
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(-?%d+)$'))
end
if used + weight > limit and weight > 0 then
  local freed, need = 0, used + weight - limit
  for i = 1, #entries, 2 do
    freed = freed + tonumber(string.match(entries[i], ':(-?%d+)$'))
    if freed >= need then return math.max(1, tonumber(entries[i + 1]) + 60000 - now) end
  end
  return 60000
end
redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], 61000)
return 0
"""

_lock = threading.Lock()
_windows: dict[str, deque] = {}  # in-process: key -> deque of (monotonic ms, weight)
_scripts: dict = {}


def _key(kind: str, token_id: int) -> str:
    return f"{settings.CHANNEL_PREFIX}:tl:{kind}:{token_id}"


def _local(key: str, limit: int, weight: int) -> int:
    now = time.monotonic() * 1000
    with _lock:
        window = _windows.setdefault(key, deque())
        while window and window[0][0] <= now - WINDOW_MS:
            window.popleft()
        used = sum(w for _, w in window)
        if weight > 0 and used + weight > limit:
            freed, need = 0, used + weight - limit
            for at, w in window:
                freed += w
                if freed >= need:
                    return max(1, int(at + WINDOW_MS - now))
            return WINDOW_MS
        window.append((now, weight))
        return 0


async def _take(kind: str, token_id: int, limit: int, weight: int, member: str) -> int:
    key = _key(kind, token_id)
    member = f"{member}.{secrets.token_hex(4)}"  # unique even when clients reuse a request id
    if not settings.REDIS_URL:
        return _local(key, limit, weight)
    loop = asyncio.get_running_loop()
    script = _scripts.get(loop)
    if script is None:
        from axonflow_site import shared

        script = _scripts[loop] = shared.async_client().register_script(SLIDING_LUA)
    return int(await script(keys=[key], args=[limit, weight, member]))


def limited(what: str, limit: int, wait_ms: int) -> RateLimited:
    retry_after = max(1, math.ceil(wait_ms / 1000))
    return RateLimited(
        f"This API token's limit of {limit} {what} per minute is reached; retry in {retry_after} s.",
        {"retry_after": retry_after, "limit": limit, "per": "minute", "scope": "token"},
        headers={"Retry-After": str(retry_after)},
    )


async def check_requests(token_id: int, limit: int, request_id: str) -> None:
    """Admit one request under the token's requests per minute, or raise RateLimited."""
    wait = await _take("rpm", token_id, limit, 1, request_id)
    if wait:
        raise limited("requests", limit, wait)


async def take_tokens(token_id: int, limit: int, tokens: int, request_id: str) -> None:
    """Admit a request estimated at `tokens` under the token's tokens per minute."""
    wait = await _take("tpm", token_id, limit, tokens, request_id)
    if wait:
        raise limited("tokens", limit, wait)


async def correct(token_id: int, estimated: int, actual: int, request_id: str) -> None:
    """Replace a request's estimate by its actual tokens (a member of the difference)."""
    if actual != estimated:
        await _take("tpm", token_id, 10**18, actual - estimated, f"{request_id}:c")


def reset() -> None:
    """Forget the in-process windows (tests)."""
    with _lock:
        _windows.clear()


async def admit(identity, request_id: str) -> None:
    """The token's requests-per-minute check, right after authentication."""
    if identity.rpm_limit:
        await check_requests(identity.token_id, identity.rpm_limit, request_id)


async def admit_tokens(identity, caller, request) -> None:
    """The token's tokens-per-minute check once the request is parsed: its estimate is
    taken now and corrected when it ends (`settle_tokens`, from routing.attempts.account)."""
    if not identity.tpm_limit:
        return
    from providers.adapters.base import CompletionRequest
    from providers.pricing import estimate_prompt_tokens

    if isinstance(request, CompletionRequest):
        estimate = estimate_prompt_tokens(request) + (request.max_tokens or settings.AXONFLOW_BUDGET_DEFAULT_MAX_TOKENS)
    else:  # embeddings: their inputs
        estimate = max(1, sum(len(text) for text in request.inputs) // 4)
    await take_tokens(identity.token_id, identity.tpm_limit, estimate, caller.request_id)
    caller.tpm_estimate = estimate


def settle_tokens(caller, actual: int) -> None:
    """At the request's end: the estimate corrected to `actual`, as a task."""
    if caller.tpm_estimate and caller.token_id is not None:
        estimate, caller.tpm_estimate = caller.tpm_estimate, 0
        task = asyncio.get_running_loop().create_task(correct(caller.token_id, estimate, actual, caller.request_id))
        _pending.add(task)
        task.add_done_callback(_pending.discard)


_pending: set[asyncio.Task] = set()
