"""The active tenant for console requests, and the transaction it scopes.

Each console request runs in one transaction with `app.current_org_id` set to the
session's active tenant, so every query (ORM or raw) is confined by row-level
security. The API (/api/, /v1/) authenticates by token and scopes itself.
"""

from __future__ import annotations

from django.http import HttpRequest

from tenants.audit import acting_as
from tenants.models import ActorKind, Membership, Tenant
from tenants.rls import tenant_context

SESSION_KEY = "active_tenant_id"
UNSCOPED_PREFIXES = ("/api/", "/v1/", "/static/", "/ws/")


def memberships_of(user) -> list[Membership]:
    return list(Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name"))


def resolve_active_tenant(request: HttpRequest) -> tuple[Tenant | None, Membership | None, list[Membership]]:
    """Return (tenant, membership, all memberships) for the session user.

    Falls back to the user's first tenant when the session names none or one the user
    no longer belongs to. Superusers without a membership may act on any tenant through
    the Django admin only.
    """
    memberships = memberships_of(request.user)
    wanted = request.session.get(SESSION_KEY)
    chosen = next((m for m in memberships if m.tenant_id == wanted), None)
    if chosen is None and memberships:
        chosen = memberships[0]
    if chosen is not None:
        request.session[SESSION_KEY] = chosen.tenant_id
        return chosen.tenant, chosen, memberships
    if request.user.is_superuser and wanted:
        return Tenant.objects.filter(pk=wanted).first(), None, memberships
    return None, None, memberships


class ActiveTenantMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        request.tenant = None
        request.membership = None
        request.memberships = []
        if request.path.startswith(UNSCOPED_PREFIXES) or not request.user.is_authenticated:
            return self.get_response(request)
        request.tenant, request.membership, request.memberships = resolve_active_tenant(request)
        with acting_as(ActorKind.USER, request.user.get_username()), tenant_context(
            request.tenant.pk if request.tenant else None
        ):
            return self.get_response(request)


def tenant_context_processor(request: HttpRequest) -> dict:
    return {
        "active_tenant": getattr(request, "tenant", None),
        "active_membership": getattr(request, "membership", None),
        "user_memberships": getattr(request, "memberships", []),
    }
