"""The audit log page (admins): every change to providers, weights, routes, operator
states, tokens, members and budgets, newest first, with who, when and a compact before →
after of the changed fields. Filters and keyset pages are tenants/audit.py's, shared with
`GET /api/v1/audit/`; this module only arranges entries for reading."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_safe

from axonflow_site.errors import ValidationFailed
from console.htmx import htmx_partial
from tenants import audit
from tenants.access import require_role
from tenants.models import ActorKind, AuditEntry, Role

OBJECT_LABELS = {
    "provider": "Provider", "model_route": "Model route", "api_token": "API token", "membership": "Member",
    "budget": "Budget", "tenant": "Tenant",
}  # fmt: skip
ACTION_LABELS = {"force_unhealthy": "force unhealthy", "force_healthy": "force healthy", "clear_state": "clear state"}
EMPTY = (None, "", {}, [])
ISO_MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


@dataclass(frozen=True)
class Change:
    """One field of an entry: `before` or `after` is None where that side has none
    (a create has no before, a delete no after)."""

    field: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Row:
    entry: AuditEntry
    changes: list[Change]

    @property
    def object_label(self) -> str:
        return OBJECT_LABELS.get(self.entry.object_type, self.entry.object_type.replace("_", " ").capitalize())

    @property
    def action_label(self) -> str:
        return ACTION_LABELS.get(self.entry.action, self.entry.action.replace("_", " "))


def shown(value: Any) -> str:
    """A stored value as one short line: JSON for structures, UTC seconds for moments."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, str) and ISO_MOMENT.match(value):
        try:
            moment = parse_datetime(value)
        except ValueError:
            moment = None
        if moment is not None and moment.utcoffset() is not None and not moment.utcoffset():
            return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value) if value != "" else "empty"


def changes_of(entry: AuditEntry) -> list[Change]:
    """The fields an entry touched: both sides of an update, the non-empty fields a create
    set or a delete removed."""
    before, after = entry.before or {}, entry.after or {}
    if entry.before is None or entry.after is None:
        side, is_after = (after, True) if entry.before is None else (before, False)
        return [
            Change(k, None if is_after else shown(v), shown(v) if is_after else None)
            for k, v in side.items()
            if v not in EMPTY
        ]
    keys = [*after, *(k for k in before if k not in after)]
    return [Change(k, shown(before.get(k)), shown(after.get(k))) for k in keys]


@require_role(Role.ADMIN)
@require_safe
def audit_log(request: HttpRequest) -> HttpResponse:
    """One page of the filtered log; htmx gets the results fragment alone."""
    context: dict[str, Any] = {"filters": request.GET, "actor_kinds": ActorKind.choices}
    try:
        query = audit.parse_query(request.GET)
        entries, context["next_cursor"] = audit.entries_page(request.tenant.pk, query)
        context.update(rows=[Row(e, changes_of(e)) for e in entries], filtered=bool(query.filters))
    except ValidationFailed as exc:
        context.update(error=exc.message, error_field=exc.details.get("field", ""))
    if htmx_partial(request):
        return render(request, "console/_audit_rows.html", context)
    context["object_types"] = choices(OBJECT_LABELS, audit.OBJECT_TYPES, request.GET.get("object_type"))
    context["actions"] = choices(ACTION_LABELS, audit.ACTIONS, request.GET.get("action"))
    return render(request, "console/audit.html", context, status=400 if "error" in context else 200)


def choices(labels: dict[str, str], values: tuple[str, ...], current: str | None) -> list[tuple[str, str]]:
    """(value, label) for a filter's select, with the current value kept if it is not a usual one."""
    extra = (current,) if current and current not in values else ()
    return [(v, labels.get(v, v.replace("_", " "))) for v in (*values, *extra)]


urlpatterns = [
    path("audit/", audit_log, name="audit"),
]
