"""Budgets: reservation before the first upstream call, settlement when the request
ends (SPEC §1 Budget, §2 rule 8; docs/budgets.md).

A request reserves its worst-case cost and tokens on every budget that applies to it
(the tenant's, and its token's) at once, all or nothing: `reserve` raises
BudgetExceeded, naming the budget that would be overshot, before anything is sent
upstream. When the request ends, however it ends, `settle` replaces the hold with what
it actually cost. A hold carries an expiry (AXONFLOW_BUDGET_HOLD_SECONDS) so that one
left behind by a process that died is released on its own.

Amounts are integers of 10⁻⁸ USD (UNIT), the usage records' precision, so a period's
spend is exact against the records. The book that holds spent and reserved amounts:

    RedisBook   with REDIS_URL: one hash per budget and period, checked and changed by
                Lua scripts (atomic across every process); rebuilt from the durable
                ledger (BudgetSpend) when its key is missing, as after a Redis restart
    LocalBook   the embedded default: the same in this process, under a lock

The durable ledger is BudgetSpend, which the usage writer updates in the same
transaction as the usage records (usage/store.py), so the two agree exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from axonflow_site.errors import AxonFlowError

log = logging.getLogger("axonflow.budgets")

_HOLD_PREFIX = secrets.token_hex(6)
_hold_numbers = itertools.count(1)

UNIT = Decimal("0.00000001")  # the usage records' cost precision


class BudgetExceeded(AxonFlowError):
    code = "budget_exceeded"
    http_status = 429


class BudgetUnavailable(AxonFlowError):
    """The shared book cannot be reached and hard limits fail closed (the default)."""

    code = "budget_unavailable"
    http_status = 503


@dataclass(frozen=True, slots=True)
class Rule:
    """What the request path needs of one enabled Budget (cached on the tenant snapshot)."""

    id: int
    tenant_id: int
    name: str
    token_id: int | None
    period: str  # day | month
    limit_units: int | None
    limit_tokens: int | None
    soft_percent: int
    time_zone: str = "UTC"

    def applies_to(self, token_id: int | None) -> bool:
        return self.token_id is None or self.token_id == token_id


@dataclass(slots=True)
class Hold:
    """One request's reservation: on every budget in `keys`, `units` and `tokens`."""

    id: str
    keys: list[tuple[Rule, date]]
    units: int
    tokens: int
    settled: bool = False


@dataclass(slots=True)
class Standing:
    """A budget's period as the book has it."""

    spent_units: int = 0
    spent_tokens: int = 0
    reserved_units: int = 0
    reserved_tokens: int = 0
    holds: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # id -> (units, tokens, expires)


def to_units(cost: Decimal) -> int:
    return int((cost / UNIT).to_integral_value(ROUND_CEILING))


def to_usd(units: int) -> Decimal:
    return (Decimal(units) * UNIT).quantize(UNIT)


_current: dict[tuple[str, str], tuple[date, datetime, float]] = {}  # (period, zone) -> (start, end, end ts)


def current_period(period: str, zone: str) -> date:
    """The first day of the period running now: period_bounds, kept until the period ends."""
    found = _current.get((period, zone))
    if found is None or time.time() >= found[2]:
        start, end = period_bounds(period, zone)
        found = _current[period, zone] = (start, end, end.timestamp())
    return found[0]


def period_bounds(period: str, zone: str, now: datetime | None = None) -> tuple[date, datetime]:
    """(the period's first day, its end) in the tenant's time zone."""
    tz = ZoneInfo(zone or "UTC")
    local = (now or timezone.now()).astimezone(tz)
    if period == "day":
        start = local.date()
        end_day = start + timedelta(days=1)
    else:
        start = local.date().replace(day=1)
        end_day = (start + timedelta(days=32)).replace(day=1)
    return start, datetime(end_day.year, end_day.month, end_day.day, tzinfo=tz)


def redis_key(rule: Rule, start: date) -> str:
    # AXONFLOW_CHANNEL_PREFIX keeps deployments (and test stacks) sharing a Redis apart.
    return f"{settings.CHANNEL_PREFIX}:budget:{rule.id}:{start.isoformat()}"


def hold_seconds() -> float:
    return settings.AXONFLOW_BUDGET_HOLD_SECONDS


# --- the ledger ------------------------------------------------------------------------


def ledger_outside_request(rule: Rule, start: date) -> tuple[int, int]:
    """ledger_spend from the event loop's sync thread, where no request cycle closes
    connections (as routing/cache.py loads snapshots)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        return ledger_spend(rule, start)
    finally:
        close_old_connections()


def ledger_spend(rule: Rule, start: date) -> tuple[int, int]:
    """The durable spend of one budget's period (usage/store.py keeps it)."""
    from tenants.rls import tenant_context
    from usage.models import BudgetSpend

    with tenant_context(rule.tenant_id):
        row = BudgetSpend.objects.filter(budget_id=rule.id, period_start=start).values_list(
            "spent_usd", "spent_tokens"
        ).first()
    return (to_units(row[0]), row[1]) if row else (0, 0)


# --- the books -------------------------------------------------------------------------


class Book(Protocol):
    async def reserve(self, hold: Hold) -> tuple[Rule, int, int] | None: ...
    async def settle(self, hold: Hold, units: int, tokens: int) -> None: ...
    async def standing(self, rule: Rule, start: date) -> Standing: ...


class LocalBook:
    """Spent and reserved amounts in this process (the embedded default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._periods: dict[tuple[int, date], Standing] = {}

    async def _load(self, keys: list[tuple[Rule, date]]) -> None:
        missing = [(r, s) for r, s in keys if (r.id, s) not in self._periods]
        for rule, start in missing:
            spent = await sync_to_async(ledger_outside_request)(rule, start)
            with self._lock:
                if (rule.id, start) not in self._periods:
                    self._periods[rule.id, start] = Standing(*spent)

    @staticmethod
    def _expire(standing: Standing, now: float) -> None:
        """Drop the holds expired by `now`: the oldest first (every hold lasts as long,
        so insertion order is expiry order), stopping at the first still held."""
        while standing.holds:
            hold_id, (units, tokens, expires) = next(iter(standing.holds.items()))
            if expires > now:
                return
            del standing.holds[hold_id]
            standing.reserved_units -= units
            standing.reserved_tokens -= tokens

    async def reserve(self, hold: Hold) -> tuple[Rule, int, int] | None:
        await self._load(hold.keys)
        now = time.monotonic()
        with self._lock:
            for rule, start in hold.keys:
                standing = self._periods[rule.id, start]
                self._expire(standing, now)
                if over(rule, standing, hold.units, hold.tokens):
                    return rule, standing.spent_units, standing.spent_tokens
            for rule, start in hold.keys:
                standing = self._periods[rule.id, start]
                standing.reserved_units += hold.units
                standing.reserved_tokens += hold.tokens
                standing.holds[hold.id] = (hold.units, hold.tokens, now + hold_seconds())
        return None

    async def settle(self, hold: Hold, units: int, tokens: int) -> None:
        self.settle_now(hold, units, tokens)

    def settle_now(self, hold: Hold, units: int, tokens: int) -> None:
        """No I/O: the request path settles in place rather than through a task."""
        with self._lock:
            for rule, start in hold.keys:
                standing = self._periods.setdefault((rule.id, start), Standing())
                held = standing.holds.pop(hold.id, None)
                if held is not None:
                    standing.reserved_units -= held[0]
                    standing.reserved_tokens -= held[1]
                standing.spent_units += units
                standing.spent_tokens += tokens

    async def standing(self, rule: Rule, start: date) -> Standing:
        await self._load([(rule, start)])
        with self._lock:
            standing = self._periods[rule.id, start]
            self._expire(standing, time.monotonic())
            return Standing(standing.spent_units, standing.spent_tokens, standing.reserved_units,
                            standing.reserved_tokens)  # fmt: skip


def over(rule: Rule, standing: Standing, units: int, tokens: int) -> bool:
    if rule.limit_units is not None and standing.spent_units + standing.reserved_units + units > rule.limit_units:
        return True
    return rule.limit_tokens is not None and standing.spent_tokens + standing.reserved_tokens + tokens > rule.limit_tokens


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


_local = LocalBook()
_books: dict[str, Book] = {}


def book() -> Book:
    url = settings.REDIS_URL
    if not url:
        return _local
    found = _books.get(url)
    if found is None:
        found = _books[url] = RedisBook(url)
    return found


def reset() -> None:
    """Forget every period and hold of this process (tests)."""
    _local._periods.clear()


# --- the request path ------------------------------------------------------------------


def new_hold(rules: list[Rule], token_id: int | None, units: int, tokens: int, request_id: str) -> Hold | None:
    """The hold a request needs: on every enabled budget that applies; None when none does."""
    keys = [(rule, current_period(rule.period, rule.time_zone)) for rule in rules if rule.applies_to(token_id)]
    if not keys:
        return None
    # Unique across processes (the prefix is random per process start) whatever the request id.
    return Hold(f"{_HOLD_PREFIX}{next(_hold_numbers):x}", keys, units, tokens)


async def reserve(hold: Hold) -> None:
    """Hold the request's worst case on every budget it is subject to, or raise
    BudgetExceeded (nothing held), or BudgetUnavailable when the shared book is away and
    AXONFLOW_BUDGET_FAIL_OPEN is off."""
    try:
        refused = await book().reserve(hold)
    except asyncio.CancelledError:  # the client left while its batch was in flight: release what it may hold
        settle_soon(hold, Decimal(0), 0)
        raise
    except (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError) as exc:
        if not settings.AXONFLOW_BUDGET_FAIL_OPEN:
            raise BudgetUnavailable("Budgets cannot be checked right now; try again shortly.") from exc
        log.warning("budget book unreachable (%s); admitting by AXONFLOW_BUDGET_FAIL_OPEN", type(exc).__name__)
        return
    except Exception as exc:  # redis.exceptions.* (not OSError subclasses)
        if not settings.AXONFLOW_BUDGET_FAIL_OPEN:
            raise BudgetUnavailable("Budgets cannot be checked right now; try again shortly.") from exc
        return
    if refused is not None:
        rule, spent_units, spent_tokens = refused
        raise exceeded(rule, spent_units, spent_tokens)


def exceeded(rule: Rule, spent_units: int, spent_tokens: int) -> BudgetExceeded:
    start, _ = period_bounds(rule.period, rule.time_zone)
    by_tokens = rule.limit_units is None
    details = {
        "budget": rule.name,
        "period": rule.period,
        "period_start": start.isoformat(),
        "spent": spent_tokens if by_tokens else str(to_usd(spent_units)),
        "limit": rule.limit_tokens if by_tokens else str(to_usd(rule.limit_units)),
        "unit": "tokens" if by_tokens else "USD",
    }
    what = "tokens" if by_tokens else "USD"
    return BudgetExceeded(
        f"Budget '{rule.name}' ({rule.period}) would be exceeded: {details['spent']} of {details['limit']} {what} spent.",
        details,
    )


def settle_soon(hold: Hold, cost: Decimal, tokens: int) -> None:
    """Settle `hold` at the request's actual cost, from synchronous code on the event
    loop (the router's one exit): the book call runs as a task. Once per hold."""
    if hold.settled:
        return
    hold.settled = True
    shared_book = book()
    if isinstance(shared_book, LocalBook):
        shared_book.settle_now(hold, to_units(cost), tokens)
        return
    task = asyncio.get_running_loop().create_task(_settle(hold, to_units(cost), tokens))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


_pending: set[asyncio.Task] = set()


async def _settle(hold: Hold, units: int, tokens: int) -> None:
    try:
        await book().settle(hold, units, tokens)
    except Exception:  # the hold expires on its own; the ledger still counts the request
        log.exception("budget hold %s could not be settled; it expires in %s s", hold.id, hold_seconds())


async def drain(timeout: float = 10.0) -> None:
    """Wait for settlements in flight (tests; the lifespan shutdown), from any loop:
    they run on the loop that served their request."""
    deadline = time.monotonic() + timeout
    while _pending and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
