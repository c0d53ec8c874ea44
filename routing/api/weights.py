"""`GET, PUT /api/v1/routing/weights/`: the tenant's default weights (admin-scope tokens).

The default weight of a provider is its ProviderConfig.weight, the same field the
console edits inline, so both paths change one thing. PUT names the providers to change
(others keep theirs), validated by providers/validation.py like every provider write,
all or nothing in one transaction; the saves invalidate the routing cache, so the next
request routes by the new weights.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from axonflow_site.errors import ValidationFailed
from providers.models import ProviderConfig
from providers.validation import apply_provider_config, validate_provider_config
from routing.api.base import TenantAPIView, json_object
from routing.api.serializers import ErrorSerializer
from tenants.models import Tenant


class WeightsSerializer(serializers.Serializer):
    weights = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100), help_text="{provider name: 0-100}"
    )


def weights_of(tenant_id: int) -> dict:
    configs = ProviderConfig.objects.filter(tenant_id=tenant_id).order_by("name").values_list("name", "weight")
    return {"weights": dict(configs)}


def parse_weights(request) -> dict:
    data = json_object(request, {"weights"}, {"weights": (dict,)})
    if "weights" not in data:
        raise ValidationFailed('Expected {"weights": {provider name: 0-100}}.', {"field": "weights"})
    return data["weights"]


class WeightsView(TenantAPIView):
    @extend_schema(responses=WeightsSerializer, operation_id="routing_weights_get")
    def get(self, request):
        return Response(weights_of(self.tenant_id))

    @extend_schema(
        request=WeightsSerializer,
        responses={200: WeightsSerializer, 400: ErrorSerializer},
        operation_id="routing_weights_update",
    )
    def put(self, request):
        wanted = parse_weights(request)
        configs = {c.name: c for c in ProviderConfig.objects.filter(tenant_id=self.tenant_id, name__in=list(wanted))}
        unknown = sorted(set(wanted) - set(configs))
        if unknown:
            raise ValidationFailed(
                f"Unknown provider name(s): {', '.join(unknown)}.", {"field": "weights", "names": unknown}
            )
        tenant = Tenant.objects.get(pk=self.tenant_id)
        cleaned = {}
        for name, weight in wanted.items():
            if isinstance(weight, bool) or not isinstance(weight, int):  # JSON numbers only, no "50"
                raise ValidationFailed(f"weights.{name}: must be an integer", {"field": "weights", "name": name})
            try:
                cleaned[name] = validate_provider_config(tenant, {"weight": weight}, configs[name])
            except ValidationFailed as exc:
                raise ValidationFailed(
                    f"weights.{name}: {exc.message.partition(': ')[2]}", {"field": "weights", "name": name}
                ) from None
        for name, values in cleaned.items():
            apply_provider_config(configs[name], values).save(update_fields=["weight", "updated"])
        return Response(weights_of(self.tenant_id))
