"""All scoping of console requests to the active tenant and role lives here. Generic:
tenancy knows no provider, route or token model; callers pass their queryset."""

from __future__ import annotations

import functools
from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from tenants.models import ROLE_RANK, Role

M = TypeVar("M", bound=Model)


def role_of(request: HttpRequest) -> str | None:
    membership = getattr(request, "membership", None)
    return membership.role if membership else None


def has_role(request: HttpRequest, role: str) -> bool:
    current = role_of(request)
    return current is not None and ROLE_RANK[current] >= ROLE_RANK[role]


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def require_role(role: str = Role.VIEWER, *, write: str | None = None):
    """View decorator: a member of the active tenant with at least `role` to read, and
    at least `write` (default: `role`) for a mutating method (POST, PUT, PATCH, DELETE).

    No active tenant gives 404 (a non-member learns nothing); too low a role gives 403.
    The roles are kept on the view (`view.required_roles`), so the role matrix test can
    read them from the URL resolver.
    """
    write = write or role

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path())
            if getattr(request, "membership", None) is None:
                raise Http404("No active tenant")
            if not has_role(request, write if request.method in UNSAFE_METHODS else role):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapper.required_roles = (role, write)
        return wrapper

    return decorator


def get_for_tenant(request: HttpRequest, queryset: QuerySet[M], **lookup) -> M:
    """The one object of `queryset` in the request's active tenant matching `lookup`.

    Another tenant's object is indistinguishable from a missing one: Http404 for both,
    so a non-member learns nothing about what exists (hc's _get_check_for_user).
    """
    tenant = getattr(request, "tenant", None)
    if tenant is None or getattr(request, "membership", None) is None:
        raise Http404("No active tenant")
    try:
        return queryset.get(tenant=tenant, **lookup)
    except queryset.model.DoesNotExist:
        raise Http404(f"No such {queryset.model._meta.verbose_name}") from None
