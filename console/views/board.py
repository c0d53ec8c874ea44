"""The live status board page; the socket that keeps it live is console/consumers.py."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from console import live
from tenants.access import require_role


@require_role()
def status_board(request: HttpRequest) -> HttpResponse:
    """Every card now; the page's socket swaps in each change."""
    return render(request, "console/board.html", {"cards": live.snapshot(request.tenant.pk)})


urlpatterns = [
    path("status/", status_board, name="status"),
]
