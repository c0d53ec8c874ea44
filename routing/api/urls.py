"""REST API under /api/v1/. Each area adds its own lines."""

from django.urls import path

from routing.api import completions, providers, status, usage, weights

app_name = "api"

urlpatterns: list = [
    path("providers/", providers.ProviderListView.as_view(), name="providers"),
    path("providers/<str:name>/", providers.ProviderDetailView.as_view(), name="provider"),
    path("providers/<str:name>/health-check/", status.HealthCheckView.as_view(), name="provider-health-check"),
    path("status/", status.StatusView.as_view(), name="status"),
    path("completions", completions.CompletionsView.as_view(), name="completions"),
    path("routing/weights/", weights.WeightsView.as_view(), name="routing-weights"),
    path("usage/", usage.UsageView.as_view(), name="usage"),
]
