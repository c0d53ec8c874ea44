"""REST API under /api/v1/. Each area adds its own lines."""

from django.urls import path

from routing import completions
from routing.api import providers, usage, weights

app_name = "api"

urlpatterns: list = [
    path("providers/", providers.ProviderListView.as_view(), name="providers"),
    path("providers/<str:name>/", providers.ProviderDetailView.as_view(), name="provider"),
    path("completions", completions.CompletionsView.as_view(), name="completions"),
    path("routing/weights/", weights.WeightsView.as_view(), name="routing-weights"),
    path("usage/", usage.UsageView.as_view(), name="usage"),
]
