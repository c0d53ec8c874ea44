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
local function purge(key, now)
  local gone = redis.call('ZRANGEBYSCORE', key .. ':h', '-inf', now)
  for _, id in ipairs(gone) do
    local held = redis.call('HGET', key .. ':a', id)
    if held then
      local u, t = string.match(held, '(%d+):(%d+)')
      redis.call('HINCRBY', key, 'ru', -tonumber(u))
      redis.call('HINCRBY', key, 'rt', -tonumber(t))
      redis.call('HDEL', key .. ':a', id)
    end
    redis.call('ZREM', key .. ':h', id)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: the budget keys. ARGV: hold id, units, tokens, hold ms, key ttl s, then per key
# its unit limit and token limit (-1: none). Returns {1} when held; {0, i} when key i
# is missing (load it from the ledger first); {2, i, spent units, spent tokens} when
# budget i would be overshot.
RESERVE_LUA = PURGE + """
local now = now_ms()
local units, tokens = tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then return {0, i} end
  purge(key, now)
  local s = redis.call('HMGET', key, 'su', 'st', 'ru', 'rt')
  local su, st, ru, rt = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0
  local lu, lt = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  if (lu >= 0 and su + ru + units > lu) or (lt >= 0 and st + rt + tokens > lt) then
    return {2, i, tostring(su), tostring(st)}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'ru', units)
  redis.call('HINCRBY', key, 'rt', tokens)
  redis.call('ZADD', key .. ':h', now + tonumber(ARGV[4]), ARGV[1])
  redis.call('HSET', key .. ':a', ARGV[1], ARGV[2] .. ':' .. ARGV[3])
  redis.call('EXPIRE', key .. ':h', ARGV[5])
  redis.call('EXPIRE', key .. ':a', ARGV[5])
end
return {1}
"""

# KEYS: the budget keys. ARGV: hold id, actual units, actual tokens.
SETTLE_LUA = """
for _, key in ipairs(KEYS) do
  local held = redis.call('HGET', key .. ':a', ARGV[1])
  if held then
    local u, t = string.match(held, '(%d+):(%d+)')
    redis.call('HINCRBY', key, 'ru', -tonumber(u))
    redis.call('HINCRBY', key, 'rt', -tonumber(t))
    redis.call('HDEL', key .. ':a', ARGV[1])
    redis.call('ZREM', key .. ':h', ARGV[1])
  end
  redis.call('HINCRBY', key, 'su', ARGV[2])
  redis.call('HINCRBY', key, 'st', ARGV[3])
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


class RedisBook:
    """The book in Redis, shared by every process (module docstring). Its own client per
    event loop: a pool of at most POOL connections that a burst waits for (rather than
    opening one per request), each call bounded by AXONFLOW_BUDGET_REDIS_TIMEOUT_SECONDS."""

    POOL = 32

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[asyncio.AbstractEventLoop, tuple] = {}

    def _scripts(self):
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            import redis.asyncio as aredis

            for stale in [each for each in self._clients if each.is_closed()]:
                self._clients.pop(stale, None)
            timeout = settings.AXONFLOW_BUDGET_REDIS_TIMEOUT_SECONDS
            pool = aredis.BlockingConnectionPool.from_url(
                self.url, max_connections=self.POOL, timeout=timeout, socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )  # fmt: skip
            client = aredis.Redis(connection_pool=pool)
            found = self._clients[loop] = (
                client.register_script(RESERVE_LUA), client.register_script(SETTLE_LUA),
                client.register_script(LOAD_LUA), client.register_script(STANDING_LUA),
            )  # fmt: skip
        return found

    async def _load(self, rule: Rule, start: date) -> None:
        units, tokens = await sync_to_async(ledger_outside_request)(rule, start)
        load = self._scripts()[2]
        await load(keys=[redis_key(rule, start)], args=[units, tokens, key_ttl(rule, start)])

    async def reserve(self, hold: Hold) -> tuple[Rule, int, int] | None:
        keys = [redis_key(rule, start) for rule, start in hold.keys]
        args: list = [hold.id, hold.units, hold.tokens, int(hold_seconds() * 1000),
                      max(key_ttl(r, s) for r, s in hold.keys)]  # fmt: skip
        for rule, _ in hold.keys:
            args += [-1 if rule.limit_units is None else rule.limit_units,
                     -1 if rule.limit_tokens is None else rule.limit_tokens]  # fmt: skip
        script = self._scripts()[0]
        for _ in range(len(keys) + 1):
            answer = await script(keys=keys, args=args)
            if int(answer[0]) == 1:
                return None
            rule, start = hold.keys[int(answer[1]) - 1]
            if int(answer[0]) == 2:
                return rule, int(answer[2]), int(answer[3])
            await self._load(rule, start)
        raise BudgetUnavailable("The budget book could not be loaded.")

    async def settle(self, hold: Hold, units: int, tokens: int) -> None:
        keys = [redis_key(rule, start) for rule, start in hold.keys]
        await self._scripts()[1](keys=keys, args=[hold.id, units, tokens])

    async def standing(self, rule: Rule, start: date) -> Standing:
        script = self._scripts()[3]
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


async def drain() -> None:
    """Wait for settlements in flight (tests; the lifespan shutdown)."""
    while _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)
