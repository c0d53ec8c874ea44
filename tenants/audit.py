"""The audit log's one writer (SPEC §1 "Audit entry"): who changed what, when, with the
fields before and after, never a key, token or secret value.

Who: the actor of the current context. The console's middleware acts as the session
user, the REST API as the token, `manage.py` as the command (set_default_actor), so a
change is attributed the same way whichever entry point made it. What: each layer
records its own objects where they are written, on the model signals (tokens and
memberships here, providers in providers/apps.py) or in the one function that saves
them (model routes, operator states), so the console, the API, the admin and commands
are audited alike without each remembering to.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping
from typing import Any

from django.db.models.signals import post_delete, post_save, pre_save

from tenants.actor import act_as, acting_as, actor_label, current_actor, set_default_actor  # noqa: F401  (the API)
from tenants.models import ApiToken, AuditEntry, Membership
from tenants.rls import tenant_context


def jsonable(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[dict | None, dict | None]:
    """Only the fields that differ, on both sides; a create or delete keeps one side whole."""
    if before is None or after is None:
        return (jsonable(before) if before is not None else None), (jsonable(after) if after is not None else None)
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: jsonable(before.get(k)) for k in keys}, {k: jsonable(after[k]) for k in keys}


def record(
    tenant_id: int,
    object_type: str,
    action: str,
    *,
    object_id: Any = "",
    object_name: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditEntry | None:
    """Write one entry inside the tenant's RLS context; the current actor is the one
    acting. An update whose fields did not change writes nothing (returns None)."""
    before, after = changes(before, after)
    if action == "update" and not after:
        return None
    kind, name = current_actor()
    with tenant_context(tenant_id):
        return AuditEntry.objects.create(
            tenant_id=tenant_id,
            actor_kind=kind,
            actor=name,
            object_type=object_type,
            object_id=str(object_id or ""),
            object_name=object_name[:200],
            action=action,
            before=before,
            after=after,
        )


# --- tokens and memberships (this app's own objects) ---------------------------------------

TOKEN_FIELDS = ("name", "scope", "prefix", "expires_at", "revoked_at")  # never token_hash


def token_fields(token: ApiToken) -> dict[str, Any]:
    return {f: getattr(token, f) for f in TOKEN_FIELDS}


def membership_fields(membership: Membership) -> dict[str, Any]:
    return {"user": membership.user.get_username(), "role": membership.role}


SNAPSHOT = {ApiToken: token_fields, Membership: membership_fields}


def remember_before(sender, instance, raw=False, **kwargs) -> None:
    """pre_save: keep the stored row's fields, for the entry post_save writes."""
    if raw or instance.pk is None:
        instance._audit_before = None
        return
    stored = sender.objects.filter(pk=instance.pk).first()
    instance._audit_before = SNAPSHOT[sender](stored) if stored is not None else None


def record_token_change(sender, instance: ApiToken, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "_audit_before", None)
    after = token_fields(instance)
    action = "create" if created else "update"
    if before is not None and before["revoked_at"] is None and instance.revoked_at is not None:
        action = "revoke"
    record(instance.tenant_id, "api_token", action, object_id=instance.pk, object_name=instance.name,
           before=None if created else before, after=after)  # fmt: skip


def record_token_delete(sender, instance: ApiToken, **kwargs) -> None:
    record(instance.tenant_id, "api_token", "delete", object_id=instance.pk, object_name=instance.name,
           before=token_fields(instance))  # fmt: skip


def record_membership_change(sender, instance: Membership, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    before = None if created else getattr(instance, "_audit_before", None)
    record(instance.tenant_id, "membership", "create" if created else "update", object_id=instance.pk,
           object_name=instance.user.get_username(), before=before, after=membership_fields(instance))  # fmt: skip


def record_membership_delete(sender, instance: Membership, **kwargs) -> None:
    record(instance.tenant_id, "membership", "delete", object_id=instance.pk,
           object_name=instance.user.get_username(), before=membership_fields(instance))  # fmt: skip


def connect() -> None:
    """Called from TenantsConfig.ready()."""
    for model in SNAPSHOT:
        pre_save.connect(remember_before, sender=model, dispatch_uid=f"audit-before-{model.__name__}")
    post_save.connect(record_token_change, sender=ApiToken, dispatch_uid="audit-token-saved")
    post_delete.connect(record_token_delete, sender=ApiToken, dispatch_uid="audit-token-deleted")
    post_save.connect(record_membership_change, sender=Membership, dispatch_uid="audit-membership-saved")
    post_delete.connect(record_membership_delete, sender=Membership, dispatch_uid="audit-membership-deleted")
