"""Budget books: what a budget's period has spent and holds (SPEC §1 Budget, §2 rule 8;
docs/budgets.md). The request path that reserves and settles is usage/holds.py.

Amounts are integers of 10⁻⁸ USD (UNIT), the usage records' precision, so a period's
spend is exact against the records. The book that holds spent and reserved amounts:

    RedisBook   usage/redis_book.py, with REDIS_URL: one hash per budget and period,
                checked and changed by Lua scripts (atomic across every process);
                rebuilt from the ledger when its key is missing (a Redis restart)
    LocalBook   here, the embedded default: the same in this process, under a lock

The durable ledger is BudgetSpend, which the usage writer updates in the same
transaction as the usage records (usage/store.py), so the two agree exactly; a book
starts each period from it.
"""

from __future__ import annotations

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

UNIT = Decimal("0.00000001")  # the usage records' cost precision


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
