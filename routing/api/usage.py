"""`GET /api/v1/usage/`: the tenant's usage records, filtered, in keyset pages, with
totals over everything the filters match; `GET /api/v1/usage/{id}/`: one record with
its routing trace (admin-scope tokens). The filters, pages and totals are
usage/queries.py's, shared with the console's request log."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from routing.api.base import TenantAPIView, cursor_link
from routing.api.serializers import AttemptSerializer
from usage.models import UsageRecord, UsageStatus
from usage.queries import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT, filter_records, page, totals_of


class UsageRecordSerializer(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider_name")
    token = serializers.SerializerMethodField()
    attempts = AttemptSerializer(many=True)
    cost = serializers.DecimalField(max_digits=14, decimal_places=8)

    class Meta:
        model = UsageRecord
        fields = [
            "id", "created", "endpoint", "provider", "providers_tried", "attempts", "attempt_count", "status",
            "status_code", "error_code", "model_requested", "model", "stream", "latency_ms", "prompt_tokens",
            "completion_tokens", "total_tokens", "cost", "currency", "token", "request_id", "prompt",
        ]  # fmt: skip

    def get_token(self, record: UsageRecord) -> dict | None:
        token = record.token
        return None if token is None else {"id": token.pk, "name": token.name, "prefix": token.prefix}


class UsageDetailSerializer(UsageRecordSerializer):
    trace = serializers.JSONField(
        help_text="The routing trace: pool, options, candidates (priority, weight, weight_used, status, "
        "operator_state, excluded, why) and the draw (method, among, total, point, chosen); {} when none was kept."
    )

    class Meta(UsageRecordSerializer.Meta):
        fields = [*UsageRecordSerializer.Meta.fields, "trace"]


class TotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost = serializers.CharField()
    avg_latency_ms = serializers.FloatField(allow_null=True)


class UsagePageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Records matching the filters, on every page.")
    next = serializers.URLField(allow_null=True, help_text="Older records: this query with `cursor=`.")
    previous = serializers.URLField(allow_null=True, help_text="Newer records.")
    totals = TotalsSerializer()
    results = UsageRecordSerializer(many=True)


class UsageView(TenantAPIView):
    allowed_query = None  # usage/queries.py refuses what it does not know
    blank_query_is_any = True

    @extend_schema(
        parameters=[
            OpenApiParameter("provider", str),
            OpenApiParameter("model", str, description="the model asked for or the one that served"),
            OpenApiParameter("status", str, enum=UsageStatus.values),
            OpenApiParameter("endpoint", str, enum=["chat", "embeddings", "messages"]),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="inclusive; no offset means UTC"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="exclusive"),
            OpenApiParameter("token", str, description="token id or prefix"),
            OpenApiParameter("request_id", str, description="the X-Request-Id the gateway answered with"),
            OpenApiParameter("limit", int, default=DEFAULT_LIMIT, description=f"1-{MAX_LIMIT}"),
            OpenApiParameter("cursor", str, description="opaque: follow `next` / `previous`"),
        ],
        responses=UsagePageSerializer,
        operation_id="usage_list",
    )
    def get(self, request):
        records, limit, cursor = filter_records(self.tenant_id, request.query_params)
        totals = totals_of(records)
        rows, older, newer = page(records.select_related("token"), cursor, limit)
        return Response(
            {
                "count": totals["requests"],
                "next": cursor_link(request, older),
                "previous": cursor_link(request, newer),
                "totals": totals,
                "results": UsageRecordSerializer(rows, many=True).data,
            }
        )


class UsageDetailView(TenantAPIView):
    @extend_schema(responses=UsageDetailSerializer, operation_id="usage_retrieve")
    def get(self, request, record_id: str):
        # A str in the URL, checked here: garbage and ids past bigint are a 404 too, not a 500.
        if not (record_id.isascii() and record_id.isdecimal() and len(record_id) <= 19 and int(record_id) <= MAX_ID):
            raise Http404("No such usage record.")
        record = UsageRecord.objects.select_related("token").filter(tenant_id=self.tenant_id, pk=record_id).first()
        if record is None:
            raise Http404("No such usage record.")
        return Response(UsageDetailSerializer(record).data)
