"""The live status board page; the socket that keeps it live is console/consumers.py."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from axonflow_site import shared
from console import live
from tenants.access import require_role
from usage.metrics import DEFAULT_WINDOW, WINDOWS
from usage.spend import soft_crossed


@require_role()
def status_board(request: HttpRequest) -> HttpResponse:
    """Every card now, over the chosen window; the page's socket swaps in each change.
    A banner says when the shared layer (Redis) is unreachable (axonflow_site/shared.py),
    and one names the budgets past their soft threshold (usage/spend.py)."""
    window = request.GET.get("window", DEFAULT_WINDOW)
    window = window if window in WINDOWS else DEFAULT_WINDOW
    cards = live.snapshot(request.tenant.pk, window)
    context = {"cards": cards, "window": window, "windows": list(WINDOWS), "shared_layer": shared.check(),
               "budgets_past_soft": soft_crossed(request.tenant)}  # fmt: skip
    return render(request, "console/board.html", context)


urlpatterns = [
    path("status/", status_board, name="status"),
]
