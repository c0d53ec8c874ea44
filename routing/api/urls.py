"""REST API under /api/v1/. Each area adds its own lines."""

from django.urls import path  # noqa: F401

app_name = "api"

urlpatterns: list = []
