"""`POST, DELETE /api/v1/providers/{name}/state/`: set or clear a provider's operator
state (admin-scope tokens). The rules and the write are providers/operator.py's; the
audit entry and the routing caches' reload follow from the provider's save."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response

from axonflow_site.errors import ProviderNotFound
from providers.models import ProviderConfig
from providers.operator import STATES, clear_operator_state, set_operator_state
from routing.api.base import TenantAPIView, json_object
from routing.api.serializers import ErrorSerializer

BODY_TYPES = {"state": (str,), "reason": (str,), "until": (str, type(None))}


# Inline, not a component: the model's operator_state already names this enum.
@extend_schema_field({"type": "string", "enum": [s.value for s in STATES]})
class StateField(serializers.CharField):
    pass


class OperatorStateWriteSerializer(serializers.Serializer):
    """Documents the body; providers/operator.py validates it."""

    state = StateField(help_text="drained: no new traffic; forced_unhealthy: never routed; forced_healthy: routed "
                       "whatever its derived health.")  # fmt: skip
    reason = serializers.CharField(max_length=500, help_text="Why: required, shown with the state.")
    until = serializers.DateTimeField(required=False, allow_null=True, help_text="Optional expiry, in the future; "
                                      "a time without an offset is UTC.")  # fmt: skip


class OperatorStateSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProviderConfig
        fields = ["name", "operator_state", "operator_reason", "operator_by", "operator_at", "operator_until"]
        read_only_fields = fields


class ProviderStateView(TenantAPIView):
    def get_config(self, name: str) -> ProviderConfig:
        config = ProviderConfig.objects.filter(tenant_id=self.tenant_id, name=name).first()
        if config is None:
            raise ProviderNotFound(f"No provider named '{name}'.", {"name": name})
        return config

    @extend_schema(
        request=OperatorStateWriteSerializer,
        responses={200: OperatorStateSerializer, 400: ErrorSerializer, 404: ErrorSerializer},
        operation_id="provider_state_set",
    )
    def post(self, request, name: str):
        """Drain, force unhealthy or force healthy the provider, with a reason and an
        optional expiry. The router obeys it at once, in every process."""
        config = self.get_config(name)
        body = json_object(request, set(BODY_TYPES), BODY_TYPES)
        set_operator_state(config, body.get("state"), body.get("reason"), body.get("until"))
        return Response(OperatorStateSerializer(config).data)

    @extend_schema(
        request=None,
        responses={200: OperatorStateSerializer, 404: OpenApiResponse(ErrorSerializer)},
        operation_id="provider_state_clear",
    )
    def delete(self, request, name: str):
        """Clear the provider's operator state (a no-op when it has none)."""
        config = clear_operator_state(self.get_config(name))
        return Response(OperatorStateSerializer(config).data)
