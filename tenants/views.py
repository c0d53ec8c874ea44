"""Login, logout and the tenant switcher."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from tenants.middleware import SESSION_KEY


class LoginView(auth_views.LoginView):
    template_name = "tenants/login.html"
    redirect_authenticated_user = True


@require_POST
@login_required
def switch_tenant(request: HttpRequest) -> HttpResponse:
    """Make another of the user's tenants the active one."""
    try:
        tenant_id = int(request.POST.get("tenant", ""))
    except ValueError:
        raise Http404("No such tenant") from None
    if not any(m.tenant_id == tenant_id for m in request.memberships):
        raise Http404("No such tenant")
    request.session[SESSION_KEY] = tenant_id
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)
