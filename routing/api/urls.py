"""REST API under /api/v1/. Each area adds its own lines."""

from django.urls import path

from routing.api import audit, budgets, completions, providers, status, tokens, usage, weights
from routing.api import models as model_routes
from routing.api import state as provider_state

app_name = "api"

urlpatterns: list = [
    path("providers/", providers.ProviderListView.as_view(), name="providers"),
    path("providers/<str:name>/", providers.ProviderDetailView.as_view(), name="provider"),
    path("providers/<str:name>/health-check/", status.HealthCheckView.as_view(), name="provider-health-check"),
    path("providers/<str:name>/state/", provider_state.ProviderStateView.as_view(), name="provider-state"),
    path("status/", status.StatusView.as_view(), name="status"),
    path("completions", completions.CompletionsView.as_view(), name="completions"),
    path("routing/weights/", weights.WeightsView.as_view(), name="routing-weights"),
    path("usage/", usage.UsageView.as_view(), name="usage"),
    path("audit/", audit.AuditView.as_view(), name="audit"),
    path("tokens/", tokens.TokenListView.as_view(), name="tokens"),
    path("tokens/<str:token_id>/", tokens.TokenDetailView.as_view(), name="token"),
    path("usage/<str:record_id>/", usage.UsageDetailView.as_view(), name="usage-detail"),
    path("models/", model_routes.ModelRouteListView.as_view(), name="models"),
    path("models/<str:name>/", model_routes.ModelRouteDetailView.as_view(), name="model"),
    path("budgets/", budgets.BudgetsView.as_view(), name="budgets"),
]
