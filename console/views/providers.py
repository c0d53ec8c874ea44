"""The providers page: the active tenant's providers with health, operator state, the
traffic share each weight implies, inline weight / priority / enabled edits, test
connection, delete, operator controls; and the add and edit forms.

Every inline action answers htmx with the provider's re-rendered row plus one
`hx-swap-oob` share cell per other provider (a weight, priority, enabled or state
change moves every share). Errors come back with status 200 and the message next to
the field, because htmx does not swap a 4xx; without htmx, errors are a 400 page and
successes redirect to the list (POST-redirect-GET).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from axonflow_site.errors import AxonFlowError, ProviderNotFound
from console.htmx import htmx_partial
from providers import secrets
from providers.forms import ProviderForm, field_error
from providers.licensing import PLAN_TYPES
from providers.models import HealthResult, OperatorState, ProviderConfig
from providers.operator import STATES, clear_operator_state, set_operator_state
from providers.validation import apply_provider_config, validate_provider_config
from routing.health.probes import check_now
from tenants.access import get_for_tenant, require_role
from tenants.models import Role

# Operator states under which the router sends a provider no traffic (routing/selection.py).
NO_TRAFFIC = {OperatorState.DRAINED, OperatorState.FORCED_UNHEALTHY}
INLINE_FIELDS = ("weight", "priority", "enabled")


@dataclass
class Row:
    """One provider as the list shows it, with what an inline edit sent back."""

    p: ProviderConfig
    state: str  # the operator state in force now ("" when none or expired)
    share: str  # "60%", "failover only" or "off"
    share_pct: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # what was typed, shown back with its error
    probe: HealthResult | None = None
    probe_error: str = ""
    state_choices: ClassVar = [(s.value, s.label) for s in STATES]

    @property
    def weight_input(self) -> str:
        return self.values.get("weight", str(self.p.weight))

    @property
    def priority_input(self) -> str:
        return self.values.get("priority", str(self.p.priority))

    @property
    def state_open(self) -> bool:
        return any(name in self.errors for name in ("state", "reason", "until"))


def traffic_shares(
    configs: list[ProviderConfig], now: datetime, plan: str | None = None
) -> dict[int, tuple[str, float]]:
    """{pk: (label, percent)}: a weight's share of the positive weights of the routable
    providers (enabled, in the tenant's `plan` when given, not drained or forced
    unhealthy) in the highest priority that has any. The other routable providers are
    "failover only"; the rest are "off"."""
    licensed = PLAN_TYPES.get(plan, frozenset()) if plan is not None else None
    live = [
        c for c in configs
        if c.enabled and c.operator_state_at(now) not in NO_TRAFFIC and (licensed is None or c.type in licensed)
    ]  # fmt: skip
    weighted = [c for c in live if c.weight > 0]
    top = max((c.priority for c in weighted), default=None)
    tier = {c.pk: c.weight for c in weighted if c.priority == top}
    total = sum(tier.values())
    shares = {}
    for c in configs:
        if c.pk in tier:
            pct = 100.0 * tier[c.pk] / total
            shares[c.pk] = ("<1%" if pct < 1 else f"{pct:.0f}%", pct)
        else:
            shares[c.pk] = ("failover only" if c in live else "off", 0.0)
    return shares


def build_rows(configs: list[ProviderConfig], plan: str | None = None, **extra) -> list[Row]:
    """Rows for `configs`; `extra` (errors, values, probe…) applies to the row of
    extra["pk"] only."""
    now = timezone.now()
    shares = traffic_shares(configs, now, plan)
    pk = extra.pop("pk", None)
    return [Row(c, c.operator_state_at(now), *shares[c.pk], **(extra if c.pk == pk else {})) for c in configs]


def tenant_providers(request: HttpRequest) -> list[ProviderConfig]:
    return list(ProviderConfig.objects.for_tenant(request.tenant))


def shares_oob(rows: list[Row]) -> str:
    """The share cells of `rows`, each swapped by id wherever it is on the page."""
    return "".join(render_to_string("console/_provider_share.html", {"row": r, "oob": True}) for r in rows)


def row_response(request: HttpRequest, config: ProviderConfig, **extra) -> HttpResponse:
    """The row of `config` and the other rows' share cells (htmx), or the list page
    (400 with the row's error) / a redirect to it (without htmx)."""
    rows = build_rows(tenant_providers(request), request.tenant.plan, pk=config.pk, **extra)
    if not htmx_partial(request):
        if extra.get("errors"):
            return render(request, "console/providers.html", {"rows": rows}, status=400)
        return redirect("console:home")
    (row,) = [r for r in rows if r.p.pk == config.pk]
    html = render_to_string("console/_provider_row.html", {"row": row}, request=request)
    return HttpResponse(html + shares_oob([r for r in rows if r.p.pk != config.pk]))


def provider_action(view):
    """An operator's POST on one provider of the active tenant. The lookup comes first,
    so another tenant's (or a missing) name is 404 whatever the method."""

    @require_role(Role.OPERATOR)
    @functools.wraps(view)
    def wrapper(request: HttpRequest, name: str) -> HttpResponse:
        config = get_for_tenant(request, ProviderConfig.objects, name=name)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return view(request, config)

    return wrapper


@require_role(Role.VIEWER, write=Role.OPERATOR)
def provider_list(request: HttpRequest) -> HttpResponse:
    rows = build_rows(tenant_providers(request), request.tenant.plan)
    return render(request, "console/providers.html", {"rows": rows})


def form_page(request: HttpRequest, form: ProviderForm, saved_message: str) -> HttpResponse:
    """Save a valid posted form and go back to the list; else show it with its errors."""
    if request.method == "POST" and form.is_valid():
        config = form.save()
        if config is not None:
            messages.success(request, saved_message.format(name=config.name))
            if htmx_partial(request):
                return HttpResponseClientRedirect(reverse("console:home"))
            return redirect("console:home")
    status = 400 if form.is_bound and not htmx_partial(request) else 200
    return render(request, "console/provider_form.html", {"form": form, "config": form.instance}, status=status)


@require_role(Role.OPERATOR)
def provider_add(request: HttpRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else None
    form = ProviderForm(data, tenant=request.tenant, initial={"type": request.GET.get("type", "openai")})
    return form_page(request, form, "Provider '{name}' added.")


@require_role(Role.OPERATOR)
def provider_edit(request: HttpRequest, name: str) -> HttpResponse:
    config = get_for_tenant(request, ProviderConfig.objects, name=name)
    data = request.POST if request.method == "POST" else None
    return form_page(request, ProviderForm(data, tenant=request.tenant, instance=config), "Provider '{name}' saved.")


@require_role(Role.OPERATOR)
def provider_type_fields(request: HttpRequest) -> HttpResponse:
    """The form's type-specific part for the chosen type, keeping what was typed."""
    initial = {k: request.GET.get(k, "")[:20_000] for k in ("type", "base_url", "region", "settings")}
    form = ProviderForm(tenant=request.tenant, initial=initial)
    return render(request, "console/_provider_type_fields.html", {"form": form})


def save_inline(request: HttpRequest, config: ProviderConfig, name: str) -> HttpResponse:
    """Validate and save one field of the row (weight, priority or enabled)."""
    raw = request.POST.get(name, "")
    value = {"true": True, "false": False}.get(raw, raw) if name == "enabled" else raw
    try:
        cleaned = validate_provider_config(request.tenant, {name: value}, config)
    except AxonFlowError as exc:
        return row_response(request, config, errors={name: field_error(exc)[1]}, values={name: raw[:50]})
    apply_provider_config(config, cleaned).save(update_fields=[name, "updated"])
    return row_response(request, config)


@provider_action
def provider_weight(request: HttpRequest, config: ProviderConfig) -> HttpResponse:
    return save_inline(request, config, "weight")


@provider_action
def provider_priority(request: HttpRequest, config: ProviderConfig) -> HttpResponse:
    return save_inline(request, config, "priority")


@provider_action
def provider_enabled(request: HttpRequest, config: ProviderConfig) -> HttpResponse:
    return save_inline(request, config, "enabled")


@provider_action
def provider_test(request: HttpRequest, config: ProviderConfig) -> HttpResponse:
    """Probe now and show the result in the row (status, latency, scrubbed error)."""
    try:
        result = check_now(config)
    except ProviderNotFound:
        return HttpResponse("This provider no longer exists.", status=404)
    config.refresh_from_db()
    error = secrets.scrub(result.error)
    if not htmx_partial(request):
        level = messages.SUCCESS if result.status != "unhealthy" else messages.ERROR
        messages.add_message(request, level, f"{config.name}: {result.status}. {error}".strip())
    return row_response(request, config, probe=result, probe_error=error)


@provider_action
def provider_delete(request: HttpRequest, config: ProviderConfig) -> HttpResponse:
    config.delete()
    remaining = build_rows(tenant_providers(request), request.tenant.plan)
    if not htmx_partial(request):
        messages.success(request, f"Provider '{config.name}' deleted.")
        return redirect("console:home")
    if not remaining:
        return HttpResponseClientRefresh()  # the empty state replaces the table
    return HttpResponse(shares_oob(remaining))  # the row itself swaps to nothing


@provider_action
def provider_state(request: HttpRequest, config: ProviderConfig) -> HttpResponse:
    """Set (state, reason, until) or, with action=clear, clear the operator state."""
    post = request.POST
    try:
        if post.get("action") == "clear":
            clear_operator_state(config)
        else:
            set_operator_state(config, post.get("state", ""), post.get("reason", ""), post.get("until") or None)
    except AxonFlowError as exc:
        name, message = field_error(exc)
        values = {k: post.get(k, "")[:600] for k in ("state", "reason", "until")}
        return row_response(request, config, errors={name or "state": message}, values=values)
    return row_response(request, config)


urlpatterns = [
    path("", provider_list, name="home"),
    path("providers/add/", provider_add, name="provider_add"),
    path("providers/type-fields/", provider_type_fields, name="provider_type_fields"),
    path("providers/<str:name>/edit/", provider_edit, name="provider_edit"),
    path("providers/<str:name>/weight/", provider_weight, name="provider_weight"),
    path("providers/<str:name>/priority/", provider_priority, name="provider_priority"),
    path("providers/<str:name>/enabled/", provider_enabled, name="provider_enabled"),
    path("providers/<str:name>/test/", provider_test, name="provider_test"),
    path("providers/<str:name>/delete/", provider_delete, name="provider_delete"),
    path("providers/<str:name>/state/", provider_state, name="provider_state"),
]
