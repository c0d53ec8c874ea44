"""The budget book in Redis (REDIS_URL), shared by every process: Lua scripts that
reserve and settle atomically on the Redis server, and the batching that lets requests
arriving together share a call (docs/budgets.md "Exact across instances")."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from zoneinfo import ZoneInfo

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from axonflow_site.errors import BudgetUnavailable
from usage.budgets import Hold, Rule, Standing, hold_seconds, ledger_outside_request, period_bounds, redis_key

# Redis: per budget and period a hash {su, st, ru, rt} (spent and reserved units and
# tokens), a sorted set KEY:h of hold ids by expiry (ms, Redis TIME) and a hash KEY:a of
# each hold's "units:tokens". Every script purges expired holds first.
PURGE = """
local function release(key, id)
  local held = redis.call('HGET', key .. ':a', id)
  if held then
    local u, t = string.match(held, '(%d+):(%d+)')
    redis.call('HINCRBY', key, 'ru', -tonumber(u))
    redis.call('HINCRBY', key, 'rt', -tonumber(t))
    redis.call('HDEL', key .. ':a', id)
  end
  redis.call('ZREM', key .. ':h', id)
end
local function purge(key, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key .. ':h', '-inf', now)) do
    release(key, id)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Many holds in one call (RedisBook batches the requests that arrive together). KEYS:
# every budget key of the batch. ARGV: hold ms, key ttl s, the number of holds, then
# per hold: id, units, tokens, its number of keys n, and n × (key index, unit limit,
# token limit; -1: none). Holds are decided in order, each seeing the ones before it.
# Returns one string per hold: "1" held; "0:i" key i is missing (load it from the
# ledger, then ask again); "2:j:units:tokens" its j-th budget would be overshot, with
# what that budget has spent.
RESERVE_LUA = PURGE + """
local now = now_ms()
local present = {}
for i, key in ipairs(KEYS) do
  present[i] = redis.call('EXISTS', key) == 1
  if present[i] then purge(key, now) end
end
local hold_ms, ttl = tonumber(ARGV[1]), ARGV[2]
local results = {}
local at = 4
for h = 1, tonumber(ARGV[3]) do
  local id, units, tokens, n = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local first = at + 4
  at = first + 3 * n
  local verdict = '1'
  for j = 0, n - 1 do
    local k = tonumber(ARGV[first + 3 * j])
    if not present[k] then verdict = '0:' .. k break end
    local s = redis.call('HMGET', KEYS[k], 'su', 'st', 'ru', 'rt')
    local su, st, ru, rt = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0
    local lu, lt = tonumber(ARGV[first + 3 * j + 1]), tonumber(ARGV[first + 3 * j + 2])
    if (lu >= 0 and su + ru + units > lu) or (lt >= 0 and st + rt + tokens > lt) then
      verdict = '2:' .. (j + 1) .. ':' .. tostring(su) .. ':' .. tostring(st)
      break
    end
  end
  if verdict == '1' then
    for j = 0, n - 1 do
      local key = KEYS[tonumber(ARGV[first + 3 * j])]
      redis.call('HINCRBY', key, 'ru', units)
      redis.call('HINCRBY', key, 'rt', tokens)
      redis.call('ZADD', key .. ':h', now + hold_ms, id)
      redis.call('HSET', key .. ':a', id, units .. ':' .. tokens)
      redis.call('EXPIRE', key .. ':h', ttl)
      redis.call('EXPIRE', key .. ':a', ttl)
    end
  end
  results[h] = verdict
end
return results
"""

# Many settlements in one call. KEYS: every budget key of the batch. ARGV: the number of
# holds, then per hold: id, actual units, actual tokens, n, and n key indexes.
SETTLE_LUA = PURGE + """
local at = 2
for h = 1, tonumber(ARGV[1]) do
  local id, units, tokens, n = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  for j = 1, n do
    local key = KEYS[tonumber(ARGV[at + 3 + j])]
    release(key, id)
    redis.call('HINCRBY', key, 'su', units)
    redis.call('HINCRBY', key, 'st', tokens)
  end
  at = at + 4 + n
end
return 1
"""

# KEYS[1] a budget key; ARGV: spent units, spent tokens, ttl s. Creates it unless another
# process has meanwhile.
LOAD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'su', ARGV[1], 'st', ARGV[2], 'ru', 0, 'rt', 0)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

STANDING_LUA = PURGE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
purge(KEYS[1], now_ms())
return redis.call('HMGET', KEYS[1], 'su', 'st', 'ru', 'rt')
"""


def key_ttl(rule: Rule, start: date) -> int:
    """Seconds a period's key is kept: to its end and a day more (the ledger keeps it for good)."""
    _, end = period_bounds(rule.period, rule.time_zone, datetime(start.year, start.month, start.day, 12,
                                                                  tzinfo=ZoneInfo(rule.time_zone or "UTC")))  # fmt: skip
    return max(3600, int((end - timezone.now()).total_seconds()) + 86400)


class Batches:
    """Group commit: calls that arrive while one is in flight go together in the next.
    `submit(item)` returns the item's own result from `run(items) -> results`."""

    MAX = 200

    def __init__(self, run, gather_seconds: float = 0.0) -> None:
        self.run = run
        self.gather_seconds = gather_seconds  # how long the first item waits for company
        self.waiting: list[tuple[object, asyncio.Future]] = []
        self.busy = False

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        if not self.busy:
            self.busy = True
            # Next loop iteration (or after gather_seconds): the requests ready by then join.
            asyncio.get_running_loop().call_later(self.gather_seconds, lambda: asyncio.ensure_future(self._drain()))
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[: self.MAX], self.waiting[self.MAX :]
                try:
                    results = await self.run([item for item, _ in batch])
                except BaseException as exc:  # every caller of the batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.busy = False


class RedisBook:
    """The book in Redis, shared by every process (module docstring). Per event loop: a
    pool of at most POOL connections that a burst waits for, each call bounded by
    AXONFLOW_BUDGET_REDIS_TIMEOUT_SECONDS, and the holds and settlements of requests
    that arrive together sent in one script call each (`Batches`): a call costs the
    event loop a few hundred microseconds of redis-py, too much to pay twice a request."""

    POOL = 32

    def __init__(self, url: str) -> None:
        self.url = url
        self._loops: dict[asyncio.AbstractEventLoop, dict] = {}

    def _for_loop(self) -> dict:
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            import redis.asyncio as aredis

            for stale in [each for each in self._loops if each.is_closed()]:
                self._loops.pop(stale, None)
            timeout = settings.AXONFLOW_BUDGET_REDIS_TIMEOUT_SECONDS
            pool = aredis.BlockingConnectionPool.from_url(
                self.url, max_connections=self.POOL, timeout=timeout, socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )  # fmt: skip
            client = aredis.Redis(connection_pool=pool)
            found = self._loops[loop] = {
                "reserve": client.register_script(RESERVE_LUA),
                "settle": client.register_script(SETTLE_LUA),
                "load": client.register_script(LOAD_LUA),
                "standing": client.register_script(STANDING_LUA),
            }
            found["reserves"] = Batches(self._reserve_many)
            # Settlements go as soon as they can: a hold left standing longer keeps its
            # budget from other requests (waiting 10 ms for company made requests near a
            # limit be refused while the budget had room, and saved little: benchmarks.md).
            found["settles"] = Batches(self._settle_many)
        return found

    async def _load(self, rule: Rule, start: date) -> None:
        units, tokens = await sync_to_async(ledger_outside_request)(rule, start)
        await self._for_loop()["load"](keys=[redis_key(rule, start)], args=[units, tokens, key_ttl(rule, start)])

    @staticmethod
    def _keys(holds: list[Hold]) -> tuple[list[str], dict[str, int]]:
        keys: list[str] = []
        index: dict[str, int] = {}
        for hold in holds:
            for rule, start in hold.keys:
                key = redis_key(rule, start)
                if key not in index:
                    keys.append(key)
                    index[key] = len(keys)
        return keys, index

    async def _reserve_many(self, holds: list[Hold]) -> list[str]:
        keys, index = self._keys(holds)
        args: list = [int(hold_seconds() * 1000), max(key_ttl(r, s) for h in holds for r, s in h.keys), len(holds)]
        for hold in holds:
            args += [hold.id, hold.units, hold.tokens, len(hold.keys)]
            for rule, start in hold.keys:
                args += [index[redis_key(rule, start)], -1 if rule.limit_units is None else rule.limit_units,
                         -1 if rule.limit_tokens is None else rule.limit_tokens]  # fmt: skip
        answer = await self._for_loop()["reserve"](keys=keys, args=args)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in answer]

    async def _settle_many(self, items: list[tuple[Hold, int, int]]) -> list[None]:
        keys, index = self._keys([hold for hold, _, _ in items])
        args: list = [len(items)]
        for hold, units, tokens in items:
            args += [hold.id, units, tokens, len(hold.keys)]
            args += [index[redis_key(rule, start)] for rule, start in hold.keys]
        await self._for_loop()["settle"](keys=keys, args=args)
        return [None] * len(items)

    async def reserve(self, hold: Hold) -> tuple[Rule, int, int] | None:
        batches = self._for_loop()["reserves"]
        for _ in range(len(hold.keys) + 1):
            verdict = await batches.submit(hold)
            if verdict == "1":
                return None
            parts = verdict.split(":")
            if parts[0] == "2":
                rule = hold.keys[int(parts[1]) - 1][0]
                return rule, int(parts[2]), int(parts[3])
            for rule, start in hold.keys:  # "0:i": a key is missing (a new period, Redis restarted)
                await self._load(rule, start)  # creates only what is missing
        raise BudgetUnavailable("The budget book could not be loaded.")

    async def settle(self, hold: Hold, units: int, tokens: int) -> None:
        await self._for_loop()["settles"].submit((hold, units, tokens))

    async def standing(self, rule: Rule, start: date) -> Standing:
        script = self._for_loop()["standing"]
        values = await script(keys=[redis_key(rule, start)])
        if not values:
            await self._load(rule, start)
            values = await script(keys=[redis_key(rule, start)])
        su, st, ru, rt = (int(v or 0) for v in values)
        return Standing(su, st, ru, rt)
