"""`/api/v1/providers/`: manage provider configs (admin-scope tokens)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from axonflow_site.errors import DuplicateProvider, ProviderNotFound
from providers.forms import restore_masked_headers
from providers.models import ProviderConfig
from providers.validation import apply_provider_config, validate_provider_config
from routing.api.base import TenantAPIView, json_object
from routing.api.serializers import ErrorSerializer, ProviderSerializer, ProviderWriteSerializer
from tenants.models import Tenant

# The JSON type of each writable field; providers/validation.py checks the values.
TYPES = {
    **dict.fromkeys(("name", "type", "api_key", "secret_ref", "base_url", "model", "region"), (str,)),
    **dict.fromkeys(("priority", "weight", "rate_limit", "timeout_seconds"), (int,)),
    "enabled": (bool,), "settings": (dict,), "models": (list,),
    "cost_input_per_1k": (str, float, type(None)), "cost_output_per_1k": (str, float, type(None)),
}  # fmt: skip

# What PUT resets when a field is absent (the key is write-only and kept).
PUT_DEFAULTS = {
    "base_url": "", "region": "", "enabled": True, "priority": 0, "weight": 50, "rate_limit": 0,
    "timeout_seconds": 30, "settings": {}, "models": [], "cost_input_per_1k": None, "cost_output_per_1k": None,
}  # fmt: skip


def body(request) -> dict:
    return json_object(request, set(TYPES), TYPES)


def _save(tenant: Tenant, data: dict, instance: ProviderConfig | None = None) -> ProviderConfig:
    if "settings" in data:  # header values read back masked keep their stored value
        data["settings"] = restore_masked_headers(data["settings"], instance)
    cleaned = validate_provider_config(tenant, data, instance)
    config = apply_provider_config(instance or ProviderConfig(tenant=tenant), cleaned)
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError:  # a concurrent create won the unique (tenant, name) race
        raise DuplicateProvider(f"A provider named '{config.name}' already exists.", {"field": "name"}) from None
    return config


class ProviderListView(TenantAPIView):
    @extend_schema(responses=ProviderSerializer(many=True), operation_id="providers_list")
    def get(self, request):
        configs = ProviderConfig.objects.for_tenant(self.tenant_id)
        return Response(ProviderSerializer(configs, many=True).data)

    @extend_schema(
        request=ProviderWriteSerializer,
        responses={201: ProviderSerializer, 409: ErrorSerializer},
        operation_id="providers_create",
    )
    def post(self, request):
        tenant = Tenant.objects.get(pk=self.tenant_id)
        config = _save(tenant, body(request))
        return Response(ProviderSerializer(config).data, status=201)


class ProviderDetailView(TenantAPIView):
    def get_config(self, name: str) -> ProviderConfig:
        config = ProviderConfig.objects.filter(tenant_id=self.tenant_id, name=name).select_related("tenant").first()
        if config is None:
            raise ProviderNotFound(f"No provider named '{name}'.", {"name": name})
        return config

    @extend_schema(responses=ProviderSerializer, operation_id="providers_retrieve")
    def get(self, request, name: str):
        return Response(ProviderSerializer(self.get_config(name)).data)

    @extend_schema(
        request=ProviderWriteSerializer,
        responses={200: ProviderSerializer, 409: ErrorSerializer},
        operation_id="providers_partial_update",
    )
    def patch(self, request, name: str):
        config = self.get_config(name)
        return Response(ProviderSerializer(_save(config.tenant, body(request), config)).data)

    @extend_schema(
        request=ProviderWriteSerializer,
        responses={200: ProviderSerializer, 409: ErrorSerializer},
        operation_id="providers_update",
    )
    def put(self, request, name: str):
        config = self.get_config(name)
        data = {**PUT_DEFAULTS, **body(request)}
        return Response(ProviderSerializer(_save(config.tenant, data, config)).data)

    @extend_schema(responses={204: None}, operation_id="providers_destroy")
    def delete(self, request, name: str):
        self.get_config(name).delete()
        return Response(status=204)
