"""All scoping of console requests to the active tenant and role lives here."""

from __future__ import annotations

import functools

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from providers.models import ProviderConfig
from tenants.models import ROLE_RANK, Role


def role_of(request: HttpRequest) -> str | None:
    membership = getattr(request, "membership", None)
    return membership.role if membership else None


def has_role(request: HttpRequest, role: str) -> bool:
    current = role_of(request)
    return current is not None and ROLE_RANK[current] >= ROLE_RANK[role]


def require_role(role: str = Role.VIEWER):
    """View decorator: a member of the active tenant with at least `role`.

    No active tenant gives 404 (a non-member learns nothing); too low a role gives 403.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path())
            if getattr(request, "membership", None) is None:
                raise Http404("No active tenant")
            if not has_role(request, role):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def get_provider_for_user(request: HttpRequest, name: str) -> tuple[ProviderConfig, bool]:
    """The active tenant's provider named `name`, and whether the user may change it.

    Another tenant's provider is indistinguishable from a missing one: 404.
    """
    tenant = getattr(request, "tenant", None)
    if tenant is None or getattr(request, "membership", None) is None:
        raise Http404("No active tenant")
    try:
        config = ProviderConfig.objects.get(tenant=tenant, name=name)
    except ProviderConfig.DoesNotExist:
        raise Http404("No such provider") from None
    return config, has_role(request, Role.OPERATOR)
