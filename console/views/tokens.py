"""The API tokens page (admins): the tenant's tokens with last use and status, a form
that creates one and shows it this once, and revoke (refused at once in every process).
The rules live in tenants/tokens.py, shared with `/api/v1/tokens/`.

The created token is rendered in the POST's own response, never stored to be shown after
a redirect. Each form carries a one-time `form_id`, so a form sent twice (a double
click, a browser's resubmit) creates one token, not two.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.cache import add_never_cache_headers

from axonflow_site.errors import ValidationFailed
from console.htmx import htmx_partial
from tenants.access import get_for_tenant, require_role
from tenants.models import ApiToken, Role, TokenScope
from tenants.tokens import create_token, revoke_token

SENT_FORMS_KEY = "console_sent_token_forms"
SENT_FORMS_KEPT = 50


def form_context(values: dict | None = None, error: ValidationFailed | None = None) -> dict:
    """The create form: what was typed, the one error next to its field, a fresh form_id."""
    field = error.details.get("field", "form") if error else ""
    text = error.message.removeprefix(f"{field}: ") if error else ""
    form = {"values": values or {"scope": TokenScope.COMPLETIONS}, "field": field, "error": text[:1].upper() + text[1:],
            "form_id": uuid.uuid4().hex}  # fmt: skip
    return {"form": form, "scopes": TokenScope.choices}


def page(request: HttpRequest, context: dict) -> HttpResponse:
    tokens = ApiToken.objects.filter(tenant=request.tenant).order_by("-created", "-id")
    return render(request, "console/tokens.html", {"tokens": tokens, **context})


def was_sent(request: HttpRequest, form_id: str) -> bool:
    return form_id in request.session.get(SENT_FORMS_KEY, [])


def mark_sent(request: HttpRequest, form_id: str) -> None:
    request.session[SENT_FORMS_KEY] = [*request.session.get(SENT_FORMS_KEY, []), form_id][-SENT_FORMS_KEPT:]


def create(request: HttpRequest) -> HttpResponse:
    """Create from the posted form; errors re-render the form (200, for htmx to swap)."""
    values = {k: request.POST.get(k, "") for k in ("name", "scope", "expires_at")}
    form_id = request.POST.get("form_id", "")
    try:
        if not form_id:
            raise ValidationFailed("This form is incomplete: reload the page and try again.")
        if was_sent(request, form_id):
            raise ValidationFailed(
                "This form was already sent, and its token is in the list below. A token is shown only once: "
                "if you did not copy it, revoke it and create another."
            )
        token, raw = create_token(request.tenant, **values)
    except ValidationFailed as error:
        context = form_context(values, error)
        return render(request, "console/_token_form.html", context) if htmx_partial(request) else page(request, context)
    mark_sent(request, form_id)
    created = {"token": token, "raw": raw}
    if htmx_partial(request):
        tokens = ApiToken.objects.filter(tenant=request.tenant).order_by("-created", "-id")
        response = render(request, "console/_token_created.html", {"created": created, "tokens": tokens, "oob": True})
    else:
        response = page(request, {"created": created})
    add_never_cache_headers(response)  # the one response that holds the token
    return response


@require_role(Role.ADMIN)
def token_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return create(request)
    return page(request, form_context())


@require_role(Role.ADMIN)
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke (a token already revoked stays as it was); htmx gets the row back."""
    token = get_for_tenant(request, ApiToken.objects.all(), pk=token_id)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    revoke_token(token)
    if htmx_partial(request):
        return render(request, "console/_token_row.html", {"token": token})
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked: it is refused from now on.")
    return redirect("console:tokens")


urlpatterns = [
    path("tokens/", token_list, name="tokens"),
    path("tokens/<int:token_id>/revoke/", token_revoke, name="token_revoke"),
]
