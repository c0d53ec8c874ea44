"""REST API under /api/v1/. Each area adds its own lines."""

from django.urls import path

from routing.api import providers

app_name = "api"

urlpatterns: list = [
    path("providers/", providers.ProviderListView.as_view(), name="providers"),
    path("providers/<str:name>/", providers.ProviderDetailView.as_view(), name="provider"),
]
