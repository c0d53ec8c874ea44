"""Console pages: thin function views over the active tenant."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from providers.models import ProviderConfig
from routing import live
from tenants.access import require_role


@require_role()
def home(request: HttpRequest) -> HttpResponse:
    providers = ProviderConfig.objects.for_tenant(request.tenant)
    return render(request, "routing/home.html", {"providers": providers})


@require_role()
def status_board(request: HttpRequest) -> HttpResponse:
    """The live board: every card now; the page's socket swaps in each change."""
    return render(request, "routing/status.html", {"cards": live.snapshot(request.tenant.pk)})
