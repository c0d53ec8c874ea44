"""The providers page: the active tenant's providers with health, weight, priority and
masked key."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from providers.models import ProviderConfig
from tenants.access import require_role


@require_role()
def provider_list(request: HttpRequest) -> HttpResponse:
    providers = ProviderConfig.objects.for_tenant(request.tenant)
    return render(request, "console/providers.html", {"providers": providers})


urlpatterns = [
    path("", provider_list, name="home"),
]
