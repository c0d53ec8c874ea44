"""The model routes pages: the names clients may ask for and the targets serving each
(SPEC §1 "Model route"). Everyone reads; operators create, edit and delete. Rules and
the writer live in providers/routes.py, shared with `/api/v1/models/`."""

from __future__ import annotations

from itertools import islice, zip_longest

from django.contrib import messages
from django.db.models import Prefetch, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django_htmx.http import HttpResponseClientRedirect

from axonflow_site.errors import AxonFlowError
from console.htmx import htmx_partial
from providers.models import ModelRoute, ModelRouteTarget, ProviderConfig
from providers.routes import DEFAULT_WEIGHT, MAX_TARGETS, delete_model_route, save_model_route, validate_model_route
from tenants.access import get_for_tenant, require_role
from tenants.models import Role

ROUTE_TARGETS = Prefetch("targets", queryset=ModelRouteTarget.objects.select_related("provider"))
BLANK_ROW = {"provider": "", "model": "", "weight": DEFAULT_WEIGHT}


def routes_of(tenant):
    return (
        ModelRoute.objects.filter(tenant=tenant)
        .annotate(total_weight=Sum("targets__weight"))
        .prefetch_related(ROUTE_TARGETS)
    )


def form_body(post) -> dict:
    """The API's body from the form: one target per row; an all-blank row is no target,
    a blank weight is the default. One row past the limit is kept, for the error."""
    columns = (post.getlist("target_provider"), post.getlist("target_model"), post.getlist("target_weight"))
    rows = islice(zip_longest(*columns, fillvalue=""), 4 * MAX_TARGETS)
    targets = [
        {"provider": p, "model": m, **({"weight": w} if w.strip() else {})}
        for p, m, w in rows
        if p.strip() or m.strip()
    ]
    return {
        "name": post.get("name", ""),
        "description": post.get("description", ""),
        "targets": targets[: MAX_TARGETS + 1],
    }


def error_place(error: AxonFlowError) -> tuple[str, int | None, str]:
    """Where the form shows an error: (field, target row or None, message without the
    field prefix). A target's field is provider, model or weight ("row": the whole row)."""
    field = error.details.get("field", "")
    text = error.message.removeprefix(f"{field}: ") if field else error.message
    row = error.details.get("target")
    if isinstance(row, int):
        return (field.rpartition(".")[2] if "." in field else "row"), row, text
    return field, None, text


def form_context(request: HttpRequest, route: ModelRoute | None, body: dict, error: AxonFlowError | None) -> dict:
    rows = [{**BLANK_ROW, **t} for t in body["targets"]] or [dict(BLANK_ROW)]
    field, row, text = error_place(error) if error else ("", None, "")
    if row is not None and row < len(rows):
        rows[row].update(error=text, error_field=field)
        field = ""
    return {
        "route": route,
        "body": body,
        "rows": rows,
        "blank_row": BLANK_ROW,
        "providers": ProviderConfig.objects.for_tenant(request.tenant).order_by("name"),
        "error": error,
        "error_field": field,
        "error_text": text,
        "max_targets": MAX_TARGETS,
    }


def render_form(request: HttpRequest, route: ModelRoute | None, body: dict, error=None) -> HttpResponse:
    template = "console/_route_form.html" if htmx_partial(request) else "console/route_form.html"
    return render(request, template, form_context(request, route, body, error))


def save_and_redirect(request: HttpRequest, route: ModelRoute | None) -> HttpResponse:
    """Validate and save the posted form; errors re-render it (200, for htmx to swap)."""
    body = form_body(request.POST)
    try:
        saved = save_model_route(request.tenant, validate_model_route(request.tenant, body, route), route)
    except AxonFlowError as error:
        return render_form(request, route, body, error)
    messages.success(request, f"Model route {saved.name} saved.")
    if htmx_partial(request):
        return HttpResponseClientRedirect(reverse("console:routes"))
    return redirect("console:routes")


@require_role()
def route_list(request: HttpRequest) -> HttpResponse:
    template = "console/_routes_table.html" if htmx_partial(request) else "console/routes.html"
    return render(request, template, {"routes": routes_of(request.tenant)})


@require_role(Role.OPERATOR)
def route_add(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return save_and_redirect(request, None)
    return render_form(request, None, {"name": "", "description": "", "targets": []})


@require_role(Role.OPERATOR)
def route_edit(request: HttpRequest, route: str) -> HttpResponse:
    instance = get_for_tenant(request, ModelRoute.objects.prefetch_related(ROUTE_TARGETS), name=route)
    if request.method == "POST":
        return save_and_redirect(request, instance)
    targets = [{"provider": t.provider.name, "model": t.model, "weight": t.weight} for t in instance.targets.all()]
    return render_form(request, instance, {"name": instance.name, "description": instance.description,
                                           "targets": targets})  # fmt: skip


@require_role(Role.OPERATOR)
def route_delete(request: HttpRequest, route: str) -> HttpResponse:
    instance = get_for_tenant(request, ModelRoute.objects.all(), name=route)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    delete_model_route(instance)
    if htmx_partial(request):
        return render(request, "console/_routes_table.html", {"routes": routes_of(request.tenant)})
    messages.success(request, f"Model route {instance.name} deleted.")
    return redirect("console:routes")


urlpatterns = [
    path("routes/", route_list, name="routes"),
    path("routes/new/", route_add, name="route_add"),
    path("routes/<str:route>/edit/", route_edit, name="route_edit"),
    path("routes/<str:route>/delete/", route_delete, name="route_delete"),
]
