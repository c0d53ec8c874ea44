"""Usage records as reports ask for them: filters from query parameters, totals over
everything they match, and keyset pages. Shared by `GET /api/v1/usage/` and the
console's request log, so both read the same numbers.

Query parameters: `provider` (name), `model` (the model asked for or the one that
served), `status` (success | error), `endpoint` (chat | embeddings | messages), `since` / `until` (ISO 8601; `since` inclusive,
`until` exclusive; no offset means UTC), `token` (token id or its prefix),
`request_id`, `limit` (1-500, default 50) and `cursor` (opaque, from a previous page).
An empty value is no filter (what an HTML form sends for a field left blank). Anything
else is refused with ValidationFailed, so a typo never silently widens a report, and
no value reaches the database that it would choke on (a 500 instead of a 400).

Pages are keyset pages over (created, id), newest first, read through the index
`usage_tenant_time_id` (tenant, created, id): page 500 costs what page 1 costs, where
an OFFSET would read and drop every row before it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from axonflow_site.errors import ValidationFailed
from usage.models import UsageRecord, UsageStatus

FILTERS = ("provider", "model", "status", "endpoint", "since", "until", "token", "request_id")
ENDPOINTS = ("chat", "embeddings", "messages")
PARAMS = frozenset({*FILTERS, "limit", "cursor"})
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_ID = 2**63 - 1  # bigint: a larger id would make PostgreSQL raise, not answer
MAX_VALUE_LENGTH = 200
OLDER, NEWER = "o", "n"


class Filters(NamedTuple):
    records: QuerySet[UsageRecord]  # every matching record of the tenant, unordered
    limit: int
    cursor: Cursor | None


class Page(NamedTuple):
    rows: list[UsageRecord]  # newest first
    next_cursor: str | None  # older rows
    previous_cursor: str | None  # newer rows


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position between two rows: read `direction` (older or newer) from (created, id)."""

    created: datetime
    id: int
    direction: str = OLDER

    def encode(self) -> str:
        raw = f"{self.direction}|{self.created.astimezone(UTC).isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """Raises ValidationFailed for anything this module did not produce."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
            direction, created_text, id_text = raw.split("|")
            created = parse_datetime(created_text)
        except (binascii.Error, UnicodeError, ValueError):
            created = None
        else:
            if direction not in (OLDER, NEWER) or not _is_id(id_text):
                created = None
        if created is None or timezone.is_naive(created):
            raise _fail("cursor", "not a cursor this API returned; start again without it")
        return cls(created, int(id_text), direction)

    def before(self) -> Q:
        """Rows after this position in newest-first order. `created <= c` on its own
        bounds the index scan; the OR alone would scan from the newest row (PostgreSQL
        does not turn it into an index condition)."""
        return Q(created__lte=self.created) & (Q(created__lt=self.created) | Q(id__lt=self.id))

    def after(self) -> Q:
        return Q(created__gte=self.created) & (Q(created__gt=self.created) | Q(id__gt=self.id))


def _fail(param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", {"field": param})


def _is_id(text: str) -> bool:
    # isdecimal() alone accepts "²" and Arabic-Indic digits, and int() of 5,000 digits raises.
    return text.isascii() and text.isdecimal() and len(text) <= 19 and int(text) <= MAX_ID


def _moment(param: str, value: str) -> datetime:
    try:
        moment = parse_datetime(value)
        day = parse_date(value) if moment is None else None
    except ValueError:  # well formed but impossible, e.g. month 13 or offset +99:00
        moment = day = None
    if moment is None:
        if day is None:
            raise _fail(param, "must be an ISO 8601 date or date-time")
        moment = datetime(day.year, day.month, day.day)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    try:
        return moment.astimezone(UTC)  # year 1 at +05:00 is before datetime.min in UTC
    except OverflowError:
        raise _fail(param, "is out of range") from None


def _bounded_int(params, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if not raw:
        return default
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= 9) or not low <= int(raw) <= high:
        raise _fail(name, f"must be an integer between {low} and {high}")
    return int(raw)


def _values(params) -> dict[str, str]:
    """The non-empty parameters, checked for what no filter could mean."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise _fail(unknown[0], f"unknown parameter; use {', '.join(sorted(PARAMS))}")
    values = {}
    for name in PARAMS:
        value = params.get(name)
        if not value:
            continue
        if not isinstance(value, str) or "\x00" in value or len(value) > MAX_VALUE_LENGTH:
            raise _fail(name, f"must be text of at most {MAX_VALUE_LENGTH} characters")
        values[name] = value
    return values


def filter_records(tenant_id: int, params) -> Filters:
    """The tenant's records matching `params` (a QueryDict or dict), the page size and
    the cursor. Raises ValidationFailed (module docstring for the parameters)."""
    values = _values(params)
    records = UsageRecord.objects.filter(tenant_id=tenant_id)
    if "provider" in values:
        records = records.filter(provider_name=values["provider"])
    if "model" in values:
        records = records.filter(Q(model=values["model"]) | Q(model_requested=values["model"]))
    if "status" in values:
        if values["status"] not in UsageStatus.values:
            raise _fail("status", f"must be one of {', '.join(UsageStatus.values)}")
        records = records.filter(status=values["status"])
    if "endpoint" in values:
        if values["endpoint"] not in ENDPOINTS:
            raise _fail("endpoint", f"must be one of {', '.join(ENDPOINTS)}")
        records = records.filter(endpoint=values["endpoint"])
    if "since" in values:
        records = records.filter(created__gte=_moment("since", values["since"]))
    if "until" in values:
        records = records.filter(created__lt=_moment("until", values["until"]))
    if "token" in values:
        token = values["token"]
        records = records.filter(token_id=int(token)) if _is_id(token) else records.filter(token__prefix=token)
    if "request_id" in values:
        records = records.filter(request_id=values["request_id"])
    limit = _bounded_int(values, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor = Cursor.decode(values["cursor"]) if "cursor" in values else None
    return Filters(records, limit, cursor)


def page(records: QuerySet[UsageRecord], cursor: Cursor | str | None, limit: int) -> Page:
    """One page of `records`, newest first, from `cursor` (None: the newest page).

    One query: `limit + 1` rows read along the index from the cursor's position, the
    extra one telling whether there is a further page."""
    if isinstance(cursor, str):
        cursor = Cursor.decode(cursor)
    if cursor is not None and cursor.direction == NEWER:
        rows = list(records.filter(cursor.after()).order_by("created", "id")[: limit + 1])
        more_newer, rows = len(rows) > limit, rows[:limit][::-1]
        return Page(rows, _edge(rows[-1:], OLDER), _edge(rows[:1], NEWER) if more_newer else None)
    newest_first = records.order_by("-created", "-id")
    if cursor is not None:
        newest_first = newest_first.filter(cursor.before())
    rows = list(newest_first[: limit + 1])
    more_older, rows = len(rows) > limit, rows[:limit]
    return Page(rows, _edge(rows[-1:], OLDER) if more_older else None, _edge(rows[:1], NEWER) if cursor else None)


def _edge(rows: list[UsageRecord], direction: str) -> str | None:
    return Cursor(rows[0].created, rows[0].pk, direction).encode() if rows else None


def totals_of(records: QuerySet[UsageRecord]) -> dict[str, Any]:
    """Totals over every record matched (one aggregate query)."""
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
