"""`GET /api/v1/status/` and `POST /api/v1/providers/{name}/health-check/`
(admin-scope tokens, scoped to the token's tenant)."""

from __future__ import annotations

from django.db.models import OuterRef, Subquery
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from axonflow_site import shared
from axonflow_site.errors import ProviderNotFound, ValidationFailed
from providers.models import HealthResult, HealthSource, HealthStatus, ProviderConfig
from routing.api.base import JSONOnly, TenantAPIView, check_body_size, check_query
from routing.api.schema import APISchema
from routing.api.serializers import CostSerializer
from routing.health.probes import check_now
from tenants.rls import tenant_context
from usage.metrics import DEFAULT_WINDOW, WINDOWS, WindowMetrics, window_metrics

# Response shapes, for the schema (the views build plain dicts). Enums inline: the
# provider's components already name these choice sets. (`status` stays a plain string:
# drf-spectacular would name its enum after the field, as it names usage records' status.)
STATUS_HELP = ", ".join(HealthStatus.values)


@extend_schema_field({"type": "string", "enum": HealthSource.values})
class SourceField(serializers.CharField):
    pass


@extend_schema_field({"type": "string", "enum": [*HealthSource.values, None], "nullable": True})
class NullableSourceField(serializers.CharField):
    pass


class HealthSerializer(serializers.Serializer):
    status = serializers.CharField(help_text=STATUS_HELP)
    source = NullableSourceField(help_text="null: never checked")
    reason = serializers.CharField(
        allow_null=True, help_text="credentials_rejected while the upstream refuses the provider's key; else null"
    )
    changed_at = serializers.DateTimeField(allow_null=True)
    last_checked_at = serializers.DateTimeField(allow_null=True)


class CheckSerializer(serializers.Serializer):
    status = serializers.CharField(help_text=STATUS_HELP)
    source = SourceField()
    latency_ms = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    checked_at = serializers.DateTimeField()


class WindowMetricsSerializer(serializers.Serializer):
    request_count = serializers.IntegerField()
    error_count = serializers.IntegerField()
    retry_count = serializers.IntegerField(help_text="attempts that re-sent a request to a provider that had failed it")
    avg_response_time_ms = serializers.FloatField(allow_null=True)
    p95_response_time_ms = serializers.FloatField(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost = CostSerializer()


class ProviderStatusSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    model = serializers.CharField(allow_blank=True)
    enabled = serializers.BooleanField()
    health = HealthSerializer()
    last_check = CheckSerializer(allow_null=True, help_text="the newest probe or traffic observation; null: none")
    metrics = WindowMetricsSerializer()


class SharedLayerSerializer(serializers.Serializer):
    configured = serializers.BooleanField(help_text="REDIS_URL is set (false: one process, nothing to share)")
    up = serializers.BooleanField(help_text="configured and reachable; false: rate limits are per process")
    down_since = serializers.DateTimeField(allow_null=True, help_text="when it became unreachable; null while up")


class StatusSerializer(serializers.Serializer):
    window = serializers.CharField(help_text=", ".join(WINDOWS))
    generated_at = serializers.DateTimeField()
    shared_layer = SharedLayerSerializer(help_text="Redis, which the instances share (as this instance sees it)")
    providers = ProviderStatusSerializer(many=True)


class HealthCheckSerializer(CheckSerializer):
    provider = serializers.CharField()
    health = HealthSerializer(help_text="the provider's health after this check")


def health_of(config: ProviderConfig) -> dict:
    return {
        "status": config.health_status,
        "source": config.health_source or None,
        "reason": config.health_reason or None,
        "changed_at": config.health_changed_at,
        "last_checked_at": config.last_checked_at,
    }


def result_of(result: HealthResult | None) -> dict | None:
    if result is None:
        return None
    return {
        "status": result.status,
        "source": result.source,
        "latency_ms": result.latency_ms,
        "error": result.error,
        "checked_at": result.checked_at,
    }


def parse_window(request) -> str:
    window = request.query_params.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise ValidationFailed(
            f"window must be one of {', '.join(WINDOWS)}.", {"window": [f"'{window[:20]}' is not a window."]}
        )
    return window


class StatusView(TenantAPIView):
    allowed_query = frozenset({"window"})

    @extend_schema(
        parameters=[OpenApiParameter("window", str, enum=list(WINDOWS), default=DEFAULT_WINDOW)],
        responses=StatusSerializer,
        operation_id="status",
    )
    def get(self, request):
        """Every provider of the tenant: health (status, source, last check) and traffic
        metrics over the window, and whether the shared layer (Redis) is reachable. Four
        queries, however many providers."""
        window = parse_window(request)
        newest = HealthResult.objects.filter(provider_id=OuterRef("pk")).order_by("-checked_at", "-pk").values("pk")[:1]
        configs = list(
            ProviderConfig.objects.filter(tenant_id=self.tenant_id).annotate(last_result_id=Subquery(newest))
        )
        results = HealthResult.objects.in_bulk([c.last_result_id for c in configs if c.last_result_id])
        metrics = window_metrics(self.tenant_id, window)
        providers = [
            {
                "name": c.name,
                "type": c.type,
                "model": c.model,
                "enabled": c.enabled,
                "health": health_of(c),
                "last_check": result_of(results.get(c.last_result_id)),
                "metrics": metrics.get(c.pk, WindowMetrics()).as_dict(),
            }
            for c in configs
        ]
        body = {"window": window, "generated_at": timezone.now(), "shared_layer": shared.check()}
        return Response({**body, "providers": providers})


class HealthCheckView(APIView):
    """Not a TenantAPIView: the probe must not hold a transaction open while it waits
    on the network, so the lookup and the recording each take their own."""

    schema = APISchema()
    content_negotiation_class = JSONOnly

    @extend_schema(request=None, responses=HealthCheckSerializer, operation_id="provider_health_check")
    def post(self, request, name: str):
        """Probe the provider now, store the result and return it with the provider's
        (possibly changed) health."""
        check_body_size(request)
        check_query(request, frozenset())
        tenant_id = request.auth.tenant_id
        with tenant_context(tenant_id):
            config = ProviderConfig.objects.filter(tenant_id=tenant_id, name=name).first()
        if config is None:
            raise ProviderNotFound(f"No provider named '{name}'.", {"name": name})
        result = check_now(config)
        with tenant_context(tenant_id):
            config.refresh_from_db()
        return Response({"provider": config.name, **result_of(result), "health": health_of(config)})
