"""The console's navigation: every page, the least role that may see it, and the
context every console template gets (what the active role may do, so templates hide
what it cannot). A page whose URL does not exist (yet) is left out."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from tenants.access import has_role
from tenants.models import Role

# (URL name, label, least role): the order of the top bar.
PAGES = (
    ("console:home", "Providers", Role.VIEWER),
    ("console:routes", "Model routes", Role.VIEWER),
    ("console:status", "Status", Role.VIEWER),
    ("console:requests", "Requests", Role.VIEWER),
    ("console:playground", "Playground", Role.OPERATOR),
    ("console:tokens", "API tokens", Role.ADMIN),
    ("console:members", "Members", Role.ADMIN),
    ("console:budgets", "Budgets", Role.ADMIN),
    ("console:audit", "Audit log", Role.ADMIN),
)


def _url(name: str) -> str | None:
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def console_context(request: HttpRequest) -> dict:
    """Template context processor (settings.TEMPLATES)."""
    if getattr(request, "membership", None) is None:
        return {"nav": [], "can_operate": False, "can_admin": False}
    nav = []
    for name, label, role in PAGES:
        url = _url(name) if has_role(request, role) else None
        if url is not None:
            current = request.path == url or (url != "/" and request.path.startswith(url))
            nav.append({"url": url, "label": label, "current": current})
    return {
        "nav": nav,
        "can_operate": has_role(request, Role.OPERATOR),
        "can_admin": has_role(request, Role.ADMIN),
    }
