"""`GET /api/v1/status/` and `POST /api/v1/providers/{name}/health-check/`
(admin-scope tokens, scoped to the token's tenant)."""

from __future__ import annotations

from django.db.models import OuterRef, Subquery
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from axonflow_site.errors import ProviderNotFound, ValidationFailed
from providers.models import HealthResult, ProviderConfig
from routing.api.base import TenantAPIView, check_body_size
from routing.health.probes import check_now
from tenants.rls import tenant_context
from usage.metrics import DEFAULT_WINDOW, WINDOWS, WindowMetrics, window_metrics


def health_of(config: ProviderConfig) -> dict:
    return {
        "status": config.health_status,
        "source": config.health_source or None,
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
    @extend_schema(
        parameters=[OpenApiParameter("window", str, enum=list(WINDOWS), default=DEFAULT_WINDOW)],
        responses=OpenApiTypes.OBJECT,
        operation_id="status",
    )
    def get(self, request):
        """Every provider of the tenant: health (status, source, last check) and traffic
        metrics over the window. Four queries, however many providers."""
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
        return Response({"window": window, "generated_at": timezone.now(), "providers": providers})


class HealthCheckView(APIView):
    """Not a TenantAPIView: the probe must not hold a transaction open while it waits
    on the network, so the lookup and the recording each take their own."""

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, operation_id="provider_health_check")
    def post(self, request, name: str):
        """Probe the provider now, store the result and return it with the provider's
        (possibly changed) health."""
        check_body_size(request)
        tenant_id = request.auth.tenant_id
        with tenant_context(tenant_id):
            config = ProviderConfig.objects.filter(tenant_id=tenant_id, name=name).first()
        if config is None:
            raise ProviderNotFound(f"No provider named '{name}'.", {"name": name})
        result = check_now(config)
        with tenant_context(tenant_id):
            config.refresh_from_db()
        return Response({"provider": config.name, **result_of(result), "health": health_of(config)})
