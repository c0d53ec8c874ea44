"""Usage records as reports ask for them: filters from query parameters, totals over
everything they match, and pages. Shared by `GET /api/v1/usage/` and the console's
request log, so both read the same numbers.

Query parameters: `provider` (name), `status` (success | error), `since` / `until`
(ISO 8601; `since` inclusive, `until` exclusive), `token` (token id or its prefix),
`limit` (1-500, default 50), `offset`. Anything else is refused, so a typo never
silently widens a report.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Avg, Count, Q, Sum
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from axonflow_site.errors import ValidationFailed
from usage.models import UsageRecord, UsageStatus

PARAMS = {"provider", "status", "since", "until", "token", "limit", "offset"}
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def _fail(param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", {"field": param})


def _moment(param: str, value: str):
    try:
        moment = parse_datetime(value)
        day = parse_date(value) if moment is None else None
    except ValueError:  # well formed but impossible, e.g. month 13
        moment = day = None
    if moment is None:
        if day is None:
            raise _fail(param, "must be an ISO 8601 date or date-time")
        moment = datetime(day.year, day.month, day.day)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    return moment


def _bounded_int(params, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _fail(name, f"must be an integer between {low} and {high}")
    return int(raw)


def filter_records(tenant_id: int, params) -> tuple:
    """(queryset, limit, offset) for the query parameters. Raises ValidationFailed."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise _fail(unknown[0], f"unknown parameter; use {', '.join(sorted(PARAMS))}")
    records = UsageRecord.objects.filter(tenant_id=tenant_id)
    if params.get("provider"):
        records = records.filter(provider_name=params["provider"])
    if "status" in params:
        if params["status"] not in UsageStatus.values:
            raise _fail("status", f"must be one of {', '.join(UsageStatus.values)}")
        records = records.filter(status=params["status"])
    if "since" in params:
        records = records.filter(created__gte=_moment("since", params["since"]))
    if "until" in params:
        records = records.filter(created__lt=_moment("until", params["until"]))
    if "token" in params:
        token = params["token"]
        records = records.filter(token_id=int(token)) if token.isdigit() else records.filter(token__prefix=token)
    limit = _bounded_int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _bounded_int(params, "offset", 0, 0, 10**9)
    return records, limit, offset


def totals_of(records) -> dict:
    agg = records.aggregate(
        requests=Count("pk"),
        errors=Count("pk", filter=Q(status=UsageStatus.ERROR)),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        cost=Sum("cost"),
        avg_latency_ms=Avg("latency_ms"),
    )
    prompt, completion = agg["prompt_tokens"] or 0, agg["completion_tokens"] or 0
    return {
        "requests": agg["requests"],
        "errors": agg["errors"],
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": f"{agg['cost'] or 0:.8f}",
        "avg_latency_ms": round(agg["avg_latency_ms"], 2) if agg["avg_latency_ms"] is not None else None,
    }
