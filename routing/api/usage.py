"""`GET /api/v1/usage/`: the tenant's usage records, filtered and paginated, with totals
over everything the filters match (admin-scope tokens). The filters and totals are
usage/queries.py's, shared with the console's request log."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from routing.api.base import TenantAPIView
from routing.api.serializers import AttemptSerializer
from usage.models import UsageRecord, UsageStatus
from usage.queries import DEFAULT_LIMIT, filter_records, totals_of


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
