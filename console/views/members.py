"""The members page (admins): who may sign in to the tenant and in which role; add an
existing or new user by username (a new user's one-time password is shown this once),
change a role, remove. The tenant always keeps an admin. Rules in tenants/members.py.

htmx posts get the members table back (every row's "last admin" state may change);
an admin who demotes or removes themself is sent away from a page they may no longer see.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.cache import add_never_cache_headers
from django_htmx.http import HttpResponseClientRedirect

from axonflow_site.errors import ValidationFailed
from console.htmx import htmx_partial
from tenants.access import get_for_tenant, require_role
from tenants.members import add_member, change_role, list_members, remove_member
from tenants.models import Membership, Role


def sentence(error: ValidationFailed, field: str) -> str:
    """The error's message without its "field: " prefix, capitalised."""
    text = error.message.removeprefix(f"{field}: ")
    return text[:1].upper() + text[1:]


def form_context(values: dict | None = None, error: ValidationFailed | None = None) -> dict:
    field = error.details.get("field", "form") if error else ""
    form = {"values": values or {"role": Role.VIEWER}, "field": field, "error": sentence(error, field) if error else ""}
    return {"form": form, "roles": Role.choices}


def table_context(request: HttpRequest, **extra) -> dict:
    return {"members": list_members(request.tenant), "roles": Role.choices, **extra}


def invite(request: HttpRequest) -> HttpResponse:
    """Add from the posted form; errors re-render the form (200, for htmx to swap). A new
    user's password is rendered in this response only (never stored to show later)."""
    values = {k: request.POST.get(k, "") for k in ("username", "role")}
    template = "console/_member_invite.html" if htmx_partial(request) else "console/members.html"
    try:
        membership, password = add_member(request.tenant, **values)
    except ValidationFailed as error:
        return render(request, template, table_context(request, **form_context(values, error)))
    if password is None and not htmx_partial(request):
        messages.success(request, f"{membership.user.get_username()} added as {membership.role}.")
        return redirect("console:members")
    added = {"membership": membership, "password": password}
    response = render(request, template, table_context(request, added=added, oob=True, **form_context()))
    add_never_cache_headers(response)
    return response


@require_role(Role.ADMIN)
def member_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return invite(request)
    return render(request, "console/members.html", table_context(request, **form_context()))


def respond(request: HttpRequest, membership: Membership, done: str, error: ValidationFailed | None, *,
            lost_access: bool = False) -> HttpResponse:  # fmt: skip
    """Away to the start page if the admin just lost this page, else the table (htmx)
    or a redirect back with a message."""
    if lost_access:
        messages.success(request, done)
        return HttpResponseClientRedirect("/") if htmx_partial(request) else redirect("/")
    if htmx_partial(request):
        row_error = {"member_id": membership.pk, "text": sentence(error, "role")} if error else None
        return render(request, "console/_members_table.html", table_context(request, row_error=row_error))
    if error:
        messages.error(request, error.message)
    else:
        messages.success(request, done)
    return redirect("console:members")


@require_role(Role.ADMIN)
def member_role(request: HttpRequest, member_id: int) -> HttpResponse:
    membership = get_for_tenant(request, Membership.objects.select_related("user"), pk=member_id)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        change_role(membership, request.POST.get("role", ""))
    except ValidationFailed as error:
        return respond(request, membership, "", error)
    except Membership.DoesNotExist:
        raise Http404("No such member") from None
    demoted_self = membership.user_id == request.user.pk and membership.role != Role.ADMIN
    done = f"{membership.user.get_username()} is now {membership.role}."
    return respond(request, membership, done, None, lost_access=demoted_self)


@require_role(Role.ADMIN)
def member_remove(request: HttpRequest, member_id: int) -> HttpResponse:
    membership = get_for_tenant(request, Membership.objects.select_related("user"), pk=member_id)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        remove_member(membership)
    except ValidationFailed as error:
        return respond(request, membership, "", error)
    except Membership.DoesNotExist:
        pass  # removed a moment ago: the outcome asked for
    if membership.user_id == request.user.pk:
        return respond(request, membership, f"You left {request.tenant.name}.", None, lost_access=True)
    return respond(request, membership, f"{membership.user.get_username()} removed from {request.tenant.name}.", None)


urlpatterns = [
    path("members/", member_list, name="members"),
    path("members/<int:member_id>/role/", member_role, name="member_role"),
    path("members/<int:member_id>/remove/", member_remove, name="member_remove"),
]
