"""Budgets as operators manage and watch them: the one rule set for the API and the
console (`replace_budgets`), and spend against each budget (`report`).

Spend comes from the durable ledger (BudgetSpend), which the usage writer keeps in the
records' own transactions: it equals the usage records of the period exactly and lags
the traffic by at most one writer round. The projection to the period's end assumes
the rate so far continues.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import transaction
from django.utils import timezone

from axonflow_site.errors import ValidationFailed
from tenants.models import ApiToken, Tenant
from tenants.rls import tenant_context
from usage.budgets import period_bounds
from usage.models import Budget, BudgetPeriod, BudgetSpend

MAX_BUDGETS = 100
FIELDS = {"name", "token_id", "period", "limit_usd", "limit_tokens", "soft_percent", "enabled"}
MAX_USD = Decimal("999999.99999999")


@dataclass(frozen=True)
class Standing:
    """One budget in its current period, as shown."""

    budget: Budget
    period_start: Any
    period_end: datetime
    spent_usd: Decimal
    spent_tokens: int
    requests: int
    percent: float | None  # of the tighter limit
    projected_percent: float | None
    soft_reached: bool
    exceeded: bool

    def as_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "name": b.name,
            "token_id": b.token_id,
            "token": b.token.prefix if b.token_id else None,
            "period": b.period,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "limit_usd": None if b.limit_usd is None else str(b.limit_usd),
            "limit_tokens": b.limit_tokens,
            "soft_percent": b.soft_percent,
            "enabled": b.enabled,
            "spent_usd": str(self.spent_usd),
            "spent_tokens": self.spent_tokens,
            "requests": self.requests,
            "percent": self.percent,
            "projected_percent": self.projected_percent,
            "soft_reached": self.soft_reached,
            "exceeded": self.exceeded,
        }


def report(tenant: Tenant, now: datetime | None = None) -> list[Standing]:
    """Every budget of the tenant with its current period's spend (ledger), by name."""
    now = now or timezone.now()
    with tenant_context(tenant.pk):
        budgets = list(Budget.objects.filter(tenant=tenant).select_related("token").order_by("name"))
        starts = {b.pk: period_bounds(b.period, tenant.time_zone, now) for b in budgets}
        rows = {
            (s.budget_id, s.period_start): s
            for s in BudgetSpend.objects.filter(budget__in=budgets, period_start__in={v[0] for v in starts.values()})
        }
    return [standing(b, *starts[b.pk], rows.get((b.pk, starts[b.pk][0])), tenant.time_zone, now) for b in budgets]


def standing(budget: Budget, start, end: datetime, row: BudgetSpend | None, zone: str, now: datetime) -> Standing:
    spent_usd = row.spent_usd if row else Decimal(0)
    spent_tokens = row.spent_tokens if row else 0
    shares = []
    if budget.limit_usd is not None:
        shares.append(float(spent_usd / budget.limit_usd) if budget.limit_usd else (1.0 if spent_usd else 0.0))
    if budget.limit_tokens is not None:
        shares.append(spent_tokens / budget.limit_tokens if budget.limit_tokens else (1.0 if spent_tokens else 0.0))
    share = max(shares) if shares else None
    begun = datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(zone or "UTC"))
    elapsed = max(1.0, (now - begun).total_seconds())
    whole = (end - begun).total_seconds()
    projected = None if share is None else share * whole / elapsed
    return Standing(
        budget, start, end, spent_usd, spent_tokens, row.requests if row else 0,
        None if share is None else round(share * 100, 2),
        None if projected is None else round(projected * 100, 1),
        share is not None and share * 100 >= budget.soft_percent,
        share is not None and share >= 1.0,
    )  # fmt: skip


def soft_crossed(tenant: Tenant) -> list[Standing]:
    """The budgets past their soft threshold now (the board's banner)."""
    return [s for s in report(tenant) if s.soft_reached and s.budget.enabled]


# --- changing the set ------------------------------------------------------------------


def clean_budget(tenant: Tenant, item: Any, index: int) -> dict[str, Any]:
    """One budget of a PUT body, checked: ValidationFailed naming the field otherwise."""
    where = f"budgets[{index}]"
    if not isinstance(item, dict):
        raise ValidationFailed(f"{where}: must be an object.", {"field": where})
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise ValidationFailed(f"{where}: unknown field(s) {', '.join(u[:40] for u in unknown[:5])}.",
                               {"field": f"{where}.{unknown[0][:40]}"})  # fmt: skip
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64 or "\x00" in name:
        raise ValidationFailed(f"{where}.name: 1-64 characters.", {"field": f"{where}.name"})
    period = item.get("period", BudgetPeriod.MONTH)
    if period not in BudgetPeriod.values:
        raise ValidationFailed(f"{where}.period: day or month.", {"field": f"{where}.period"})
    limit_usd = clean_usd(item.get("limit_usd"), f"{where}.limit_usd")
    limit_tokens = item.get("limit_tokens")
    if limit_tokens is not None and (type(limit_tokens) is not int or not 0 <= limit_tokens <= 10**15):
        raise ValidationFailed(f"{where}.limit_tokens: a whole number of tokens, 0 or more.",
                               {"field": f"{where}.limit_tokens"})  # fmt: skip
    if limit_usd is None and limit_tokens is None:
        raise ValidationFailed(f"{where}: give limit_usd, limit_tokens or both.", {"field": f"{where}.limit_usd"})
    soft = item.get("soft_percent", 80)
    if type(soft) is not int or not 1 <= soft <= 100:
        raise ValidationFailed(f"{where}.soft_percent: a whole number from 1 to 100.",
                               {"field": f"{where}.soft_percent"})  # fmt: skip
    enabled = item.get("enabled", True)
    if type(enabled) is not bool:
        raise ValidationFailed(f"{where}.enabled: true or false.", {"field": f"{where}.enabled"})
    token_id = item.get("token_id")
    if token_id is not None:
        known = type(token_id) is int and 0 < token_id < 2**63
        if not known or not ApiToken.objects.filter(tenant=tenant, pk=token_id).exists():
            raise ValidationFailed(f"{where}.token_id: no such API token.", {"field": f"{where}.token_id"})
    return {"name": name.strip(), "token_id": token_id, "period": period, "limit_usd": limit_usd,
            "limit_tokens": limit_tokens, "soft_percent": soft, "enabled": enabled}  # fmt: skip


def clean_usd(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationFailed(f"{field}: a number of US dollars (e.g. \"25.00\").", {"field": field})
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValidationFailed(f"{field}: a number of US dollars (e.g. \"25.00\").", {"field": field}) from None
    if not amount.is_finite() or amount < 0 or amount > MAX_USD or amount != amount.quantize(Decimal("1e-8")):
        raise ValidationFailed(f"{field}: from 0 to {MAX_USD}, at most 8 decimal places.", {"field": field})
    return amount


@transaction.atomic
def replace_budgets(tenant: Tenant, items: Any) -> list[Budget]:
    """Make the tenant's budgets exactly `items` (a PUT): matched by name, a kept budget
    keeps its ledger; one left out is deleted. All or nothing."""
    if not isinstance(items, list) or len(items) > MAX_BUDGETS:
        raise ValidationFailed(f"budgets: a list of at most {MAX_BUDGETS} budgets.", {"field": "budgets"})
    with tenant_context(tenant.pk):
        cleaned = [clean_budget(tenant, item, i) for i, item in enumerate(items)]
        names = [c["name"] for c in cleaned]
        if len(set(names)) != len(names):
            raise ValidationFailed("budgets: two budgets share a name.", {"field": "budgets"})
        existing = {b.name: b for b in Budget.objects.filter(tenant=tenant)}
        for name, budget in existing.items():
            if name not in names:
                budget.delete()
        kept = []
        for values in cleaned:
            budget = existing.get(values["name"]) or Budget(tenant=tenant)
            changed = budget.pk is None or any(getattr(budget, k) != v for k, v in values.items())
            for key, value in values.items():
                setattr(budget, key, value)
            if changed:
                budget.save()
            kept.append(budget)
    return kept


def check_zone(zone: str) -> str:
    try:
        if len(zone) > 64 or "\x00" in zone:
            raise ValueError(zone)
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed("time_zone: an IANA time zone name, e.g. Europe/Berlin.", {"field": "time_zone"}) from None
    return zone


def save_budget(tenant: Tenant, item: dict[str, Any], *, original: str | None = None) -> Budget:
    """Create a budget, or change the one named `original` (the console's form), by the
    same rules as the API. ValidationFailed names the field."""
    values = clean_budget(tenant, item, 0)
    with transaction.atomic(), tenant_context(tenant.pk):
        budget = Budget.objects.filter(tenant=tenant, name=original).first() if original else None
        clash = Budget.objects.filter(tenant=tenant, name=values["name"]).exclude(pk=getattr(budget, "pk", None))
        if clash.exists():
            raise ValidationFailed("name: another budget has this name.", {"field": "name"})
        budget = budget or Budget(tenant=tenant)
        for key, value in values.items():
            setattr(budget, key, value)
        budget.save()
    return budget
