"""The request log: usage records with filters, totals and keyset pages (the numbers
come from usage/queries.py, as the usage API's do), and each request's routing trace,
which answers "why did this request go there?"."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from axonflow_site.errors import ValidationFailed
from console.htmx import htmx_partial
from providers.models import ProviderConfig
from tenants.access import get_for_tenant, require_role
from tenants.models import ApiToken
from usage.models import UsageRecord, UsageStatus
from usage.queries import ENDPOINTS, filter_records, page, totals_of

PAGE_SIZE = 50
DRAW_METHODS = {
    "preferred": "the request named it as its preferred provider",
    "weighted": "a random draw in proportion to weight, among the eligible providers of the highest priority",
    "standby": "no eligible provider had a positive weight, so the standbys (weight 0) took over in failover order",
    "none": "no provider was eligible",
}


@require_role()
def request_log(request: HttpRequest) -> HttpResponse:
    """Filters, totals and one keyset page; htmx gets the results fragment alone."""
    params = request.GET.copy()
    params.setdefault("limit", str(PAGE_SIZE))
    context: dict[str, Any] = {"filters": request.GET, "statuses": UsageStatus.choices, "endpoints": ENDPOINTS}
    try:
        records, limit, cursor = filter_records(request.tenant.pk, params)
        context["totals"] = totals_of(records)
        context["page"] = page(records.select_related("token"), cursor, limit)
    except ValidationFailed as exc:
        context["error"] = exc.message
    if htmx_partial(request):
        return render(request, "console/_request_rows.html", context)
    context["providers"] = (
        ProviderConfig.objects.for_tenant(request.tenant).order_by("name").values_list("name", flat=True)
    )
    context["tokens"] = ApiToken.objects.filter(tenant=request.tenant).order_by("name").only("pk", "name", "prefix")
    return render(request, "console/requests.html", context, status=400 if "error" in context else 200)


@require_role()
def request_detail(request: HttpRequest, record_id: int) -> HttpResponse:
    record = get_for_tenant(request, UsageRecord.objects.select_related("token"), pk=record_id)
    return render(request, "console/request_detail.html", {"record": record, "trace": explain(record)})


def explain(record: UsageRecord) -> dict[str, Any] | None:
    """The stored trace, arranged for reading: each candidate's share of the draw and
    whether it was chosen or tried, the draw's ranges, and a one-line answer. None for a
    record kept before traces were (`{}`)."""
    trace = record.trace or {}
    if not trace.get("candidates") and not trace.get("draw"):
        return None
    draw = dict(trace.get("draw") or {})
    total = draw.get("total") or 0
    start, among = 0.0, []
    for entry in draw.get("among") or []:
        weight = entry.get("weight") or 0
        share = round(100 * weight / total, 1) if total else None
        among.append({**entry, "start": round(start, 4), "end": round(start + weight, 4), "share": share})
        start += weight
    tried = {a.get("provider"): a.get("outcome") for a in record.attempts or []}
    candidates = [
        {**c, "chosen": c.get("provider") == draw.get("chosen"), "outcome": tried.get(c.get("provider"))}
        for c in trace.get("candidates") or []
    ]
    return {
        "pool": trace.get("pool") or "",
        "options": trace.get("options") or {},
        "candidates": candidates,
        "excluded": sum(1 for c in candidates if c.get("excluded")),
        "draw": {**draw, "among": among, "why": DRAW_METHODS.get(draw.get("method") or "", "")},
        "error": trace.get("error"),
    }


urlpatterns = [
    path("requests/", request_log, name="requests"),
    path("requests/<int:record_id>/", request_detail, name="request_detail"),
]
