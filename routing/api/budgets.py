"""`/api/v1/budgets/`: the tenant's budgets and their spend (admin-scope tokens).

GET lists every budget with its current period's spend; PUT replaces the set (matched
by name: a kept budget keeps its ledger; one left out is deleted), all or nothing. The
rules live in usage/spend.py, shared with the console; enforcement in usage/holds.py.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from axonflow_site.errors import ValidationFailed
from routing.api.base import TenantAPIView, json_object
from routing.api.serializers import ErrorSerializer
from tenants.models import Tenant
from usage.spend import check_zone, replace_budgets, report


class BudgetSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    token_id = serializers.IntegerField(allow_null=True, required=False, help_text="an API token's id; null: the whole tenant")
    period = serializers.ChoiceField(choices=["day", "month"], required=False, default="month")
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=8, allow_null=True, required=False)
    limit_tokens = serializers.IntegerField(allow_null=True, required=False, min_value=0)
    soft_percent = serializers.IntegerField(required=False, default=80, min_value=1, max_value=100)
    enabled = serializers.BooleanField(required=False, default=True)


class BudgetStandingSerializer(BudgetSerializer):
    token = serializers.CharField(allow_null=True, help_text="the token's prefix")
    period_start = serializers.DateField()
    period_end = serializers.DateTimeField()
    spent_usd = serializers.DecimalField(max_digits=16, decimal_places=8)
    spent_tokens = serializers.IntegerField()
    requests = serializers.IntegerField()
    percent = serializers.FloatField(allow_null=True, help_text="spend as a share of the tighter limit, in %")
    projected_percent = serializers.FloatField(allow_null=True, help_text="at the current rate, by the period's end")
    soft_reached = serializers.BooleanField()
    exceeded = serializers.BooleanField()


class BudgetListSerializer(serializers.Serializer):
    time_zone = serializers.CharField(help_text="the IANA zone the periods follow (the tenant's)")
    budgets = BudgetStandingSerializer(many=True)


class BudgetPutSerializer(serializers.Serializer):
    time_zone = serializers.CharField(required=False, help_text="change the tenant's zone for budget periods")
    budgets = BudgetSerializer(many=True)


class BudgetsView(TenantAPIView):
    """The tenant's budgets (SPEC §1 Budget, §2 rule 8; docs/budgets.md)."""

    @extend_schema(responses=BudgetListSerializer, operation_id="budgets_list")
    def get(self, request):
        """Every budget with its current period's spend (the durable ledger: equal to the
        usage records of the period), the share of its limit and the projection."""
        tenant = Tenant.objects.get(pk=self.tenant_id)
        return Response({"time_zone": tenant.time_zone, "budgets": [s.as_dict() for s in report(tenant)]})

    @extend_schema(
        request=BudgetPutSerializer,
        responses={200: BudgetListSerializer, 400: ErrorSerializer},
        operation_id="budgets_replace",
    )
    def put(self, request):
        """Replace the tenant's budgets with `budgets` (and optionally its `time_zone`)."""
        data = json_object(request, {"budgets", "time_zone"}, {"budgets": (list,), "time_zone": (str,)})
        if "budgets" not in data:
            raise ValidationFailed("budgets: required (a list; [] removes every budget).", {"field": "budgets"})
        tenant = Tenant.objects.get(pk=self.tenant_id)
        if "time_zone" in data and data["time_zone"] != tenant.time_zone:
            tenant.time_zone = check_zone(data["time_zone"])
            tenant.save(update_fields=["time_zone"])
        replace_budgets(tenant, data["budgets"])
        return Response({"time_zone": tenant.time_zone, "budgets": [s.as_dict() for s in report(tenant)]})
