"""Who belongs to a tenant and in which role: the rules behind the console's members page.

A tenant always keeps at least one admin: the last one cannot be demoted or removed, by
themself or by anyone. The check locks the tenant's admin memberships, so two admins
demoting each other at the same moment cannot both succeed. The audit entries come from
the model signals in tenants/audit.py (never a password).
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from axonflow_site.errors import ValidationFailed
from tenants.models import AuditEntry, Membership, Role, Tenant
from tenants.rls import tenant_context

PASSWORD_BYTES = 12  # 16 URL-safe characters


@dataclass(frozen=True)
class Member:
    membership: Membership
    since: datetime.datetime  # when the membership was created (audit log), else the user joined
    last_admin: bool  # the tenant's only admin: cannot be demoted or removed


def list_members(tenant: Tenant) -> list[Member]:
    """The tenant's members by username, in two queries. Membership has no creation time
    of its own; its audit entry "create" has it."""
    memberships = list(Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__username"))
    with tenant_context(tenant.pk):
        created = dict(
            AuditEntry.objects.filter(
                tenant=tenant, object_type="membership", action="create", object_id__in=[str(m.pk) for m in memberships]
            ).values_list("object_id", "created")
        )
    admins = sum(m.role == Role.ADMIN for m in memberships)
    return [
        Member(m, created.get(str(m.pk), m.user.date_joined), m.role == Role.ADMIN and admins == 1) for m in memberships
    ]


def clean_username(username: object) -> str:
    """A username as the user model accepts it (Django: up to 150 of letters, digits and @.+-_)."""
    if not isinstance(username, str):
        raise ValidationFailed("username: must be a string.", {"field": "username"})
    username = username.strip()
    if not username:
        raise ValidationFailed("username: enter the username of the person to add.", {"field": "username"})
    User = get_user_model()
    field = User._meta.get_field(User.USERNAME_FIELD)
    try:
        field.run_validators(username)
    except ValidationError as exc:
        raise ValidationFailed(f"username: {' '.join(exc.messages)}", {"field": "username"}) from None
    if field.max_length and len(username) > field.max_length:
        raise ValidationFailed(f"username: at most {field.max_length} characters.", {"field": "username"})
    return username


def clean_role(role: object) -> str:
    if not isinstance(role, str) or role not in Role.values:
        raise ValidationFailed(
            f"role: must be one of {', '.join(Role.values)}.", {"field": "role", "choices": Role.values}
        )
    return role


def find_user(username: str):
    """The user with this exact username, else the only one matching it case-insensitively
    ("Bob" finds bob), else None."""
    User = get_user_model()
    field = User.USERNAME_FIELD
    exact = User.objects.filter(**{field: username}).first()
    if exact is not None:
        return exact
    matches = list(User.objects.filter(**{f"{field}__iexact": username})[:2])
    return matches[0] if len(matches) == 1 else None


def add_member(tenant: Tenant, username: object, role: object) -> tuple[Membership, str | None]:
    """Give a user a role in the tenant; returns (membership, password).

    An existing user is added as is (password None). An unknown username becomes a new
    user with a random password, returned this once for the admin to hand over; it is
    stored only as Django's password hash. Raises ValidationFailed for a malformed
    username or role, or a user who is already a member (details.role: their role)."""
    username = clean_username(username)
    role = clean_role(role)
    with transaction.atomic():
        user = find_user(username)
        password = None
        if user is None:
            password = secrets.token_urlsafe(PASSWORD_BYTES)
            try:
                with transaction.atomic():
                    user = get_user_model().objects.create_user(username=username, password=password)
            except IntegrityError:  # created by someone else a moment ago
                user, password = find_user(username), None
        existing = Membership.objects.filter(tenant=tenant, user=user).first()
        if existing is not None:
            raise ValidationFailed(
                f"username: {user.get_username()} is already a member of {tenant.name} ({existing.role}).",
                {"field": "username", "role": existing.role},
            )
        try:
            with transaction.atomic():
                membership = Membership.objects.create(tenant=tenant, user=user, role=role)
        except IntegrityError:  # the same invitation sent twice at once
            raise ValidationFailed(
                f"username: {user.get_username()} is already a member of {tenant.name}.", {"field": "username"}
            ) from None
    return membership, password


def _lock_admins(tenant_id: int) -> set[int]:
    """The pks of the tenant's admin memberships, locked (in pk order, so two callers
    cannot deadlock) until the caller's transaction ends."""
    return set(
        Membership.objects.select_for_update()
        .filter(tenant_id=tenant_id, role=Role.ADMIN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _refuse_last_admin(stored: Membership, admins: set[int]) -> None:
    if stored.role == Role.ADMIN and not admins - {stored.pk}:
        raise ValidationFailed(
            f"{stored.user.get_username()} is the last admin of this tenant: make someone else an admin first.",
            {"field": "role", "reason": "last_admin"},
        )


def _locked(membership: Membership) -> tuple[Membership, set[int]]:
    """The stored membership and the tenant's admins, all locked: admins first, always."""
    admins = _lock_admins(membership.tenant_id)
    stored = Membership.objects.select_for_update(of=("self",)).select_related("user").get(pk=membership.pk)
    return stored, admins


def change_role(membership: Membership, role: object) -> Membership:
    """Set the membership's role (the same role again changes nothing and audits nothing).

    Raises ValidationFailed for an unknown role or for demoting the tenant's last admin,
    and Membership.DoesNotExist when the membership is gone."""
    role = clean_role(role)
    with transaction.atomic():
        stored, admins = _locked(membership)
        if stored.role != role:
            if role != Role.ADMIN:
                _refuse_last_admin(stored, admins)
            stored.role = role
            stored.save(update_fields=["role"])
    membership.role = stored.role
    return membership


def remove_member(membership: Membership) -> None:
    """End the membership (the user account stays, and may belong to other tenants).

    Raises ValidationFailed when it is the tenant's last admin, and Membership.DoesNotExist
    when it is already gone."""
    with transaction.atomic():
        stored, admins = _locked(membership)
        _refuse_last_admin(stored, admins)
        stored.delete()
