"""How queued usage entries become rows: UsageRecords by one executemany INSERT, and
per-minute MetricBuckets per provider (created, or updated under a row lock so several
processes can share a minute). Called by usage/writer.py's thread, one tenant at a
time inside its RLS context.

Counts and costs are clamped into their columns' ranges first (`clamp_entry`): they come
from upstream answers, which are untrusted, and one value a column refuses (a negative
count in an unsigned column) would fail the tenant's whole batch on every retry."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from providers.models import ProviderConfig
from tenants.models import ApiToken, Tenant
from tenants.rls import tenant_context
from usage.metrics import WindowMetrics, bucket_index
from usage.models import Budget, BudgetSpend, MetricBucket, UsageRecord

if TYPE_CHECKING:
    from usage.entry import Entry

log = logging.getLogger("axonflow.usage")

MAX_TOKENS = 2_147_483_647  # PositiveIntegerField's upper bound on PostgreSQL
MAX_RECORD_COST = Decimal("999999.99999999")  # UsageRecord.cost: 14 digits, 8 decimal places
MAX_BUCKET_COST = Decimal("99999999.99999999")  # MetricBucket.cost: 16 digits, 8 decimal places
MAX_LATENCY_MS = 86_400_000.0  # a day
clamped_values = 0  # values clamp_entry changed since start (for metrics)
_warned_at = -1e9


def _count(value) -> int:
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return min(MAX_TOKENS, max(0, int(value)))
    return 0


def _cost(value) -> Decimal:
    if isinstance(value, Decimal) and value.is_finite() and 0 <= value <= MAX_RECORD_COST:
        return value
    try:
        value = Decimal(value)
    except (ArithmeticError, TypeError, ValueError):
        return Decimal(0)
    return min(MAX_RECORD_COST, max(Decimal(0), value)) if value.is_finite() else Decimal(0)


def _latency(value) -> float:
    if type(value) in (float, int) and 0 <= value <= MAX_LATENCY_MS:  # NaN fails both comparisons
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return min(MAX_LATENCY_MS, max(0.0, float(value)))
    return 0.0


def clamp_entry(entry: Entry) -> bool:
    """Bring the entry's tokens, cost and latencies into their columns' ranges, in place
    (a negative, non-numeric or infinite value becomes 0); True if anything changed.
    Logged at most once a minute, counted in `clamped_values`. Each helper returns a
    valid value itself, so "changed" is an identity test (no comparison can raise)."""
    global clamped_values, _warned_at
    before = (entry.prompt_tokens, entry.completion_tokens, entry.cost, entry.latency_ms)
    entry.prompt_tokens, entry.completion_tokens = _count(entry.prompt_tokens), _count(entry.completion_tokens)
    if entry.prompt_tokens + entry.completion_tokens > MAX_TOKENS:  # total_tokens is a column too
        entry.completion_tokens = MAX_TOKENS - entry.prompt_tokens
    entry.cost, entry.latency_ms = _cost(entry.cost), _latency(entry.latency_ms)
    after = (entry.prompt_tokens, entry.completion_tokens, entry.cost, entry.latency_ms)
    changed = any(a is not b for a, b in zip(before, after, strict=True))
    for attempt in entry.attempts:
        latency = attempt.get("latency_ms")
        if latency is not None and _latency(latency) is not latency:
            attempt["latency_ms"], changed = _latency(latency), True
    if changed:
        clamped_values += 1
        now = time.monotonic()
        if now - _warned_at > 60:
            _warned_at = now
            log.warning("usage of request %s held values out of range (tokens %r/%r, cost %r); stored clamped",
                        entry.request_id, *before[:3])  # fmt: skip
    return changed


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def tally(entries: list[Entry], live_providers: set[int]) -> dict[tuple[int, datetime], WindowMetrics]:
    """Per (provider, minute): every attempt that reached the provider (rate-limit skips
    did not), with tokens and cost on the successful one."""
    tallies: dict[tuple[int, datetime], WindowMetrics] = defaultdict(WindowMetrics)
    for entry in entries:
        minute = _minute(entry.created)
        for attempt, provider_id in zip(entry.attempts, entry.attempt_ids, strict=True):
            if attempt["outcome"] == "rate_limited" or provider_id not in live_providers:
                continue
            t = tallies[(provider_id, minute)]
            t.request_count += 1
            t.retry_count += "retry" in attempt
            t.latency_sum_ms += attempt["latency_ms"]
            t.histogram[bucket_index(attempt["latency_ms"])] += 1
            if attempt["outcome"] == "success":
                if entry.status == "success":
                    t.prompt_tokens += entry.prompt_tokens
                    t.completion_tokens += entry.completion_tokens
                    t.cost += entry.cost
            else:
                t.error_count += 1
    return tallies


def _add_to_bucket(tenant_id: int, provider_id: int, minute: datetime, t: WindowMetrics) -> None:
    for _ in range(3):
        bucket = MetricBucket.objects.select_for_update().filter(provider_id=provider_id, minute=minute).first()
        if bucket is None:
            try:
                with transaction.atomic():  # savepoint: another process may create it first
                    MetricBucket.objects.create(
                        tenant_id=tenant_id,
                        provider_id=provider_id,
                        minute=minute,
                        request_count=t.request_count,
                        error_count=t.error_count,
                        retry_count=t.retry_count,
                        latency_sum_ms=t.latency_sum_ms,
                        latency_histogram=t.histogram,
                        prompt_tokens=t.prompt_tokens,
                        completion_tokens=t.completion_tokens,
                        cost=min(MAX_BUCKET_COST, t.cost),
                    )
                return
            except IntegrityError:
                continue
        histogram = list(bucket.latency_histogram or []) + [0] * (
            len(t.histogram) - len(bucket.latency_histogram or [])
        )
        bucket.request_count += t.request_count
        bucket.error_count += t.error_count
        bucket.retry_count += t.retry_count
        bucket.latency_sum_ms += t.latency_sum_ms
        bucket.latency_histogram = [a + b for a, b in zip(histogram, t.histogram, strict=False)]
        bucket.prompt_tokens += t.prompt_tokens
        bucket.completion_tokens += t.completion_tokens
        bucket.cost = min(MAX_BUCKET_COST, bucket.cost + t.cost)
        bucket.save()
        return
    raise IntegrityError(f"metric bucket for provider {provider_id} at {minute} could not be written")


COLUMNS = (
    "tenant_id", "token_id", "provider_id", "provider_name", "providers_tried", "attempts", "attempt_count",
    "status", "status_code", "error_code", "model", "stream", "latency_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "cost", "currency", "request_id", "prompt", "created", "endpoint", "model_requested", "trace",
)  # fmt: skip


def _adapters(vendor: str):
    """(json, decimal, datetime) to driver values: the conversions Django's fields make
    (JSONField, DecimalField, DateTimeField with USE_TZ), without the per-value layers."""
    if vendor == "postgresql":
        from psycopg.types.json import Jsonb

        return lambda value: Jsonb(value, dumps=_json_text), _same, _same
    return _json_text, _decimal_text, _utc_text


def _same(value):
    return value


def _json_text(value) -> str:
    """orjson: the trace and the attempts of every record are encoded on the writer
    thread, which shares the GIL with the event loop; json.dumps took ~9 µs a trace,
    orjson under 1. Anything orjson cannot encode goes the standard way."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def _utc_text(moment: datetime) -> str:
    return str(moment.astimezone(UTC).replace(tzinfo=None))


def insert_records(tenant_id: int, entries: list[Entry], live: set[int], live_tokens: set[int]) -> None:
    """One executemany INSERT. The ORM's bulk_create cost ~60 µs of CPU per row (model
    instances, per-field compilation), a third of the gateway's CPU at 2,500 req/s, on a
    thread that competes with the event loop for the GIL; plain rows cost a fraction."""
    from django.db import connection

    fields = {f.attname: f for f in UsageRecord._meta.concrete_fields}
    as_json, as_cost, as_time = _adapters(connection.vendor)
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(UsageRecord._meta.db_table)} ({', '.join(quote(fields[c].column) for c in COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    )
    rows = []
    for e in entries:
        tried = list(dict.fromkeys(a["provider"] for a in e.attempts if a["outcome"] != "rate_limited"))
        rows.append(
            (
                tenant_id, e.token_id if e.token_id in live_tokens else None,
                e.provider_id if e.provider_id in live else None, e.provider_name, as_json(tried),
                as_json(e.attempts), len(e.attempts), e.status, e.status_code, e.error_code, e.model[:200],
                e.stream, e.latency_ms, e.prompt_tokens, e.completion_tokens, e.prompt_tokens + e.completion_tokens,
                as_cost(e.cost), "USD", e.request_id, e.prompt, as_time(e.created), e.endpoint,
                e.model_requested[:200], as_json(e.trace_dict()),
            )
        )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


BUDGET_UPSERT = """
    INSERT INTO usage_budgetspend (tenant_id, budget_id, period_start, spent_usd, spent_tokens, requests)
    VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (budget_id, period_start) DO UPDATE SET
        spent_usd = usage_budgetspend.spent_usd + excluded.spent_usd,
        spent_tokens = usage_budgetspend.spent_tokens + excluded.spent_tokens,
        requests = usage_budgetspend.requests + excluded.requests
"""


def add_to_budgets(tenant_id: int, entries: list[Entry]) -> None:
    """The durable budget ledger (usage/budgets.py): each entry's cost and tokens added to
    every budget period it was held against, in the records' own transaction. A budget
    deleted since is skipped (its ledger went with it)."""
    totals: dict[tuple[int, object], list] = {}
    for entry in entries:
        for budget_id, start in entry.budgets:
            total = totals.setdefault((budget_id, start), [Decimal(0), 0, 0])
            total[0] += entry.cost
            total[1] += entry.prompt_tokens + entry.completion_tokens
            total[2] += 1
    if not totals:
        return
    live = {b.pk: b for b in Budget.objects.filter(tenant_id=tenant_id, pk__in={b for b, _ in totals})}
    rows = [(tenant_id, b, start, str(c), t, n) for (b, start), (c, t, n) in sorted(totals.items()) if b in live]
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.executemany(BUDGET_UPSERT, rows)
    after = BudgetSpend.objects.filter(budget_id__in=[r[1] for r in rows], period_start__in={r[2] for r in rows})
    for spend in after:
        added = totals.get((spend.budget_id, spend.period_start))
        if added is not None:
            warn_if_crossed(live[spend.budget_id], spend, added[0], added[1])


def warn_if_crossed(budget: Budget, spend: BudgetSpend, usd: Decimal, tokens: int) -> None:
    """Log a budget's spend passing its soft threshold, or its limit, with this batch."""
    for limit, now, before, unit in (
        (budget.limit_usd, spend.spent_usd, spend.spent_usd - usd, "USD"),
        (budget.limit_tokens, spend.spent_tokens, spend.spent_tokens - tokens, "tokens"),
    ):
        if not limit:
            continue
        for share, what in ((Decimal(budget.soft_percent) / 100, f"its soft threshold ({budget.soft_percent} %)"),
                            (Decimal(1), "its limit")):  # fmt: skip
            if before < limit * share <= now:
                log.warning("budget %r of tenant %s passed %s: %s of %s %s this %s", budget.name, budget.tenant_id,
                            what, now, limit, unit, budget.period)  # fmt: skip


def write_tenant(tenant_id: int, entries: list[Entry]) -> None:
    """Write one tenant's entries in its RLS context (one transaction)."""
    if not Tenant.objects.filter(pk=tenant_id).exists():
        return  # the tenant was deleted since: its usage goes with it
    for entry in entries:
        clamp_entry(entry)
    with tenant_context(tenant_id):
        ids = {i for e in entries for i in [e.provider_id, *e.attempt_ids] if i is not None}
        live = set(ProviderConfig.objects.filter(tenant_id=tenant_id, pk__in=ids).values_list("pk", flat=True))
        token_ids = {e.token_id for e in entries if e.token_id is not None}
        live_tokens = set(ApiToken.objects.filter(tenant_id=tenant_id, pk__in=token_ids).values_list("pk", flat=True))
        insert_records(tenant_id, entries, live, live_tokens)
        add_to_budgets(tenant_id, entries)
        for (provider_id, minute), t in sorted(tally(entries, live).items()):
            _add_to_bucket(tenant_id, provider_id, minute, t)
        for token_id in live_tokens:
            last = max(e.created for e in entries if e.token_id == token_id)
            ApiToken.objects.filter(Q(last_used__isnull=True) | Q(last_used__lt=last), pk=token_id).update(
                last_used=last
            )
