"""htmx conventions of the console (STYLE.md "Views and HTMX partials")."""

from __future__ import annotations

from django.http import HttpRequest


def htmx_partial(request: HttpRequest) -> bool:
    """True when htmx asked for a fragment (not a boosted page): render the fragment
    template, not the layout (netbox utilities/htmx.py)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted
