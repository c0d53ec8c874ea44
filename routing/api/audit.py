"""`GET /api/v1/audit/`: the tenant's audit log, newest first (admin-scope tokens).

Filters and keyset pages are tenants/audit.py's, shared with the console's audit page:
`object_type`, `action`, `actor_kind`, `object_id` (exact), `actor`, `object_name`
(contains, any case), `since` (inclusive) / `until` (exclusive) as ISO 8601, `limit`
(1-200, default 50) and `cursor` (from a `next` link). Anything else is refused.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from routing.api.base import TenantAPIView, cursor_link
from routing.api.serializers import ErrorSerializer
from tenants import audit
from tenants.models import ActorKind, AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = [
            "id", "created", "actor_kind", "actor", "object_type", "object_id", "object_name", "action", "before",
            "after",
        ]  # fmt: skip


class AuditPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="the next (older) page, or null on the last")
    results = AuditEntrySerializer(many=True)


class AuditView(TenantAPIView):
    allowed_query = None  # tenants/audit.py refuses what it does not know
    blank_query_is_any = True

    @extend_schema(
        parameters=[
            OpenApiParameter("object_type", str, description="provider, model_route, api_token, membership, …"),
            OpenApiParameter("action", str, description="create, update, delete, revoke, drain, …"),
            OpenApiParameter("actor_kind", str, enum=ActorKind.values),
            OpenApiParameter("actor", str, description="contains, any case"),
            OpenApiParameter("object_name", str, description="contains, any case"),
            OpenApiParameter("object_id", str),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="inclusive; no offset means UTC"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="exclusive; no offset means UTC"),
            OpenApiParameter("limit", int, default=audit.DEFAULT_LIMIT),
            OpenApiParameter("cursor", str, description="from a `next` link"),
        ],
        responses={200: AuditPageSerializer, 400: ErrorSerializer},
        operation_id="audit_list",
    )
    def get(self, request):
        query = audit.parse_query(request.query_params)
        entries, cursor = audit.entries_page(self.tenant_id, query)
        return Response({"next": cursor_link(request, cursor), "results": AuditEntrySerializer(entries, many=True).data})
