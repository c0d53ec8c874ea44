"""`GET /api/v1/usage/`: the tenant's usage records, filtered and paginated, with totals
over everything the filters match (admin-scope tokens).

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
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from axonflow_site.errors import ValidationFailed
from routing.api.base import TenantAPIView
from routing.api.serializers import AttemptSerializer
from routing.models import UsageRecord, UsageStatus

PARAMS = {"provider", "status", "since", "until", "token", "limit", "offset"}
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


class UsageRecordSerializer(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider_name")
    token = serializers.SerializerMethodField()
    attempts = AttemptSerializer(many=True)
    cost = serializers.DecimalField(max_digits=14, decimal_places=8)

    class Meta:
        model = UsageRecord
        fields = [
            "id", "created", "provider", "providers_tried", "attempts", "attempt_count", "status", "status_code",
            "error_code", "model", "stream", "latency_ms", "prompt_tokens", "completion_tokens", "total_tokens",
            "cost", "currency", "token", "request_id", "prompt",
        ]  # fmt: skip

    def get_token(self, record: UsageRecord) -> dict | None:
        token = record.token
        return None if token is None else {"id": token.pk, "name": token.name, "prefix": token.prefix}


class TotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost = serializers.CharField()
    avg_latency_ms = serializers.FloatField(allow_null=True)


class UsagePageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    totals = TotalsSerializer()
    results = UsageRecordSerializer(many=True)


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


def page_link(request, limit: int, offset: int) -> str:
    query = request.GET.copy()
    query["limit"], query["offset"] = str(limit), str(offset)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


class UsageView(TenantAPIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("provider", str),
            OpenApiParameter("status", str, enum=UsageStatus.values),
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("until", OpenApiTypes.DATETIME),
            OpenApiParameter("token", str, description="token id or prefix"),
            OpenApiParameter("limit", int, default=DEFAULT_LIMIT),
            OpenApiParameter("offset", int, default=0),
        ],
        responses=UsagePageSerializer,
        operation_id="usage_list",
    )
    def get(self, request):
        records, limit, offset = filter_records(self.tenant_id, request.query_params)
        totals = totals_of(records)
        page = records.select_related("token").order_by("-created", "-pk")[offset : offset + limit]
        count = totals["requests"]
        return Response(
            {
                "count": count,
                "next": page_link(request, limit, offset + limit) if offset + limit < count else None,
                "previous": page_link(request, limit, max(0, offset - limit)) if offset > 0 else None,
                "totals": totals,
                "results": UsageRecordSerializer(page, many=True).data,
            }
        )
