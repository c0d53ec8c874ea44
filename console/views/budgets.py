"""The budgets page (admins): each budget's spend in its current period against its
limit (a bar), the projection to the period's end at the current rate, the soft
threshold and whether it is exceeded; a form that adds or changes one, and delete.
The rules live in usage/spend.py, shared with `/api/v1/budgets/`; enforcement is
usage/holds.py.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import path

from axonflow_site.errors import ValidationFailed
from tenants.access import get_for_tenant, require_role
from tenants.models import ApiToken, Role
from usage.models import Budget, BudgetPeriod
from usage.spend import report, save_budget

FIELDS = ("name", "token_id", "period", "limit_usd", "limit_tokens", "soft_percent")


def page(request: HttpRequest, values: dict | None = None, error: ValidationFailed | None = None) -> HttpResponse:
    field = (error.details.get("field", "form").rsplit(".", 1)[-1]) if error else ""
    tokens = ApiToken.objects.filter(tenant=request.tenant, revoked_at__isnull=True).order_by("name")
    context = {
        "standings": report(request.tenant),
        "tokens": tokens,
        "periods": BudgetPeriod.choices,
        "form": {"values": values or {"period": "month", "soft_percent": "80", "enabled": True}, "field": field,
                 "error": error.message if error else ""},  # fmt: skip
    }
    return render(request, "console/budgets.html", context, status=200)


def posted(request: HttpRequest) -> dict:
    """The form's strings as the rules take them: numbers as numbers, blanks as none."""
    values = {name: request.POST.get(name, "").strip() for name in FIELDS}
    item: dict = {"name": values["name"], "period": values["period"] or "month", "enabled": "enabled" in request.POST}
    item["limit_usd"] = values["limit_usd"] or None
    for name in ("token_id", "limit_tokens", "soft_percent"):
        raw = values[name]
        item[name] = int(raw) if raw.isdigit() and len(raw) < 19 else (raw or None)
    if item["soft_percent"] is None:
        item["soft_percent"] = 80
    return item


@require_role(Role.ADMIN)
def budget_list(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return page(request)
    item = posted(request)
    try:
        budget = save_budget(request.tenant, item, original=request.POST.get("original") or item["name"])
    except ValidationFailed as error:
        return page(request, {**request.POST.dict(), "enabled": "enabled" in request.POST}, error)
    messages.success(request, f"Budget {budget.name} saved: it applies from the next request.")
    return redirect("console:budgets")


@require_role(Role.ADMIN)
def budget_delete(request: HttpRequest, budget_id: int) -> HttpResponse:
    budget = get_for_tenant(request, Budget.objects.all(), pk=budget_id)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    budget.delete()
    messages.success(request, f"Budget {budget.name} deleted.")
    return redirect("console:budgets")


urlpatterns = [
    path("budgets/", budget_list, name="budgets"),
    path("budgets/<int:budget_id>/delete/", budget_delete, name="budget_delete"),
]
