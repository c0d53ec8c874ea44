"""A request's budget hold: reserved before its first upstream call, settled when it
ends (SPEC §2 rule 8; docs/budgets.md). routing/attempts.py is the one caller.

A request reserves its worst-case cost and tokens on every budget that applies to it
(the tenant's, and its token's) at once, all or nothing: `reserve` raises
BudgetExceeded, naming the budget that would be overshot, before anything is sent
upstream. When the request ends, however it ends, `settle_soon` replaces the hold with
what it actually cost. A hold carries an expiry (AXONFLOW_BUDGET_HOLD_SECONDS) so that
one left behind by a process that died is released on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from decimal import Decimal

from django.conf import settings

from axonflow_site.errors import BudgetExceeded, BudgetUnavailable
from usage.budgets import (
    Book,
    Hold,
    LocalBook,
    Rule,
    current_period,
    hold_seconds,
    period_bounds,
    to_units,
    to_usd,
)
from usage.redis_book import RedisBook

log = logging.getLogger("axonflow.budgets")

_HOLD_PREFIX = secrets.token_hex(6)
_hold_numbers = itertools.count(1)

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
