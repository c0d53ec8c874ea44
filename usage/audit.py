"""Budgets in the audit log (tenants/audit.py): every create, change and delete, from
the API, the console, the admin or a command alike (model signals)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tenants import audit
from usage.budgets import UNIT
from usage.models import Budget

FIELDS = ("name", "token_id", "period", "limit_usd", "limit_tokens", "soft_percent", "enabled")


def fields(budget: Budget) -> dict[str, Any]:
    shown = {f: getattr(budget, f) for f in FIELDS}
    if shown["limit_usd"] is not None:  # as stored, whatever form it was given in
        shown["limit_usd"] = str(Decimal(shown["limit_usd"]).quantize(UNIT))
    return shown


def remember_before(sender, instance: Budget, raw=False, **kwargs) -> None:
    stored = None if raw or instance.pk is None else Budget.objects.filter(pk=instance.pk).first()
    instance._audit_before = fields(stored) if stored is not None else None


def record_change(sender, instance: Budget, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    before = None if created else getattr(instance, "_audit_before", None)
    audit.record(instance.tenant_id, "budget", "create" if created else "update", object_id=instance.pk,
                 object_name=instance.name, before=before, after=fields(instance))  # fmt: skip


def record_delete(sender, instance: Budget, origin=None, **kwargs) -> None:
    if audit.deleting_tenant(origin):
        return
    audit.record(instance.tenant_id, "budget", "delete", object_id=instance.pk, object_name=instance.name,
                 before=fields(instance))  # fmt: skip


def connect() -> None:
    from django.db.models.signals import post_delete, post_save, pre_save

    pre_save.connect(remember_before, sender=Budget, dispatch_uid="usage-budget-before")
    post_save.connect(record_change, sender=Budget, dispatch_uid="usage-budget-audit")
    post_delete.connect(record_delete, sender=Budget, dispatch_uid="usage-budget-delete")
