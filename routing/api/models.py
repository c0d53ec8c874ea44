"""`/api/v1/models/`: manage model routes (admin-scope tokens).

A route is a name clients may ask for, served by its targets only (SPEC §1). The rules
and the one writer live in providers/routes.py; these views parse, look up and render.
PUT replaces the whole route (its targets too); an absent `name` keeps the current one.
"""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from axonflow_site.errors import ProviderNotFound, ValidationFailed
from providers.models import ModelRoute, ModelRouteTarget
from providers.routes import (
    DEFAULT_WEIGHT,
    MAX_TARGETS,
    delete_model_route,
    route_fields,
    save_model_route,
    validate_model_route,
)
from routing.api.base import TenantAPIView, json_object
from routing.api.serializers import ErrorSerializer
from tenants.models import Tenant


class RouteTargetSerializer(serializers.Serializer):
    provider = serializers.CharField(help_text="A provider name of the tenant.")
    model = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="Upstream model; blank: the provider's `model`."
    )
    weight = serializers.IntegerField(required=False, min_value=0, max_value=100, default=DEFAULT_WEIGHT)


class ModelRouteWriteSerializer(serializers.Serializer):
    """Documents the body; providers/routes.py validates it (unknown fields refused)."""

    name = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        help_text="Letters, digits, '.', '_', '-', ':'; not `auto`, not a provider's name.",
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=500)
    targets = RouteTargetSerializer(many=True, min_length=1, max_length=MAX_TARGETS)


class ModelRouteSerializer(ModelRouteWriteSerializer):
    created = serializers.DateTimeField()
    updated = serializers.DateTimeField()


TYPES = {"name": (str,), "description": (str, type(None)), "targets": (list,)}


def route_body(request) -> dict:
    """The JSON body, its fields and their JSON types checked (an integer weight, not
    "50" as a console form posts); providers/routes.py checks the rest."""
    data = json_object(request, set(TYPES), TYPES)
    for i, target in enumerate(data.get("targets") or []):
        weight = target.get("weight", DEFAULT_WEIGHT) if isinstance(target, dict) else DEFAULT_WEIGHT
        if isinstance(weight, bool) or not isinstance(weight, int):
            field = f"targets[{i}].weight"
            raise ValidationFailed(f"{field}: must be an integer", {"field": field, "target": i})
    return data


def routes_of(tenant_id: int):
    targets = ModelRouteTarget.objects.select_related("provider")
    return ModelRoute.objects.filter(tenant_id=tenant_id).prefetch_related(Prefetch("targets", queryset=targets))


def represent(route: ModelRoute) -> dict:
    return {**route_fields(route), "created": route.created, "updated": route.updated}


class ModelRouteListView(TenantAPIView):
    """The tenant's model routes: names clients may send as `model`, each served by its
    targets only (provider, upstream model, weight). Route and provider names share one
    namespace; `auto` is reserved."""

    @extend_schema(responses=ModelRouteSerializer(many=True), operation_id="models_list")
    def get(self, request):
        return Response(ModelRouteSerializer([represent(r) for r in routes_of(self.tenant_id)], many=True).data)

    @extend_schema(
        request=ModelRouteWriteSerializer,
        responses={201: ModelRouteSerializer, 400: ErrorSerializer, 409: ErrorSerializer},
        operation_id="models_create",
    )
    def post(self, request):
        tenant = Tenant.objects.get(pk=self.tenant_id)
        route = save_model_route(tenant, validate_model_route(tenant, route_body(request)))
        return Response(ModelRouteSerializer(represent(route)).data, status=201)


class ModelRouteDetailView(TenantAPIView):
    """One model route by name. PUT replaces it whole (targets included; an absent
    `name` keeps the current one). An unknown name is `provider_not_found`."""

    def get_route(self, name: str) -> ModelRoute:
        route = routes_of(self.tenant_id).select_related("tenant").filter(name=name).first()
        if route is None:
            raise ProviderNotFound(f"No model route named '{name}'.", {"name": name})
        return route

    @extend_schema(responses={200: ModelRouteSerializer, 404: ErrorSerializer}, operation_id="models_retrieve")
    def get(self, request, name: str):
        return Response(ModelRouteSerializer(represent(self.get_route(name))).data)

    @extend_schema(
        request=ModelRouteWriteSerializer,
        responses={200: ModelRouteSerializer, 400: ErrorSerializer, 404: ErrorSerializer, 409: ErrorSerializer},
        operation_id="models_update",
    )
    def put(self, request, name: str):
        route = self.get_route(name)
        cleaned = validate_model_route(route.tenant, route_body(request), route)
        route = save_model_route(route.tenant, cleaned, route)
        return Response(ModelRouteSerializer(represent(route)).data)

    @extend_schema(responses={204: None, 404: ErrorSerializer}, operation_id="models_destroy")
    def delete(self, request, name: str):
        delete_model_route(self.get_route(name))
        return Response(status=204)
