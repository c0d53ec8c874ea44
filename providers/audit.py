"""What the audit log keeps of a provider config (tenants/audit.py writes it).

Hooked on the model's signals (providers/apps.py), so every write path is audited:
the API, the console, the admin and commands. The key never appears: only whether one
is set and whether it was replaced. Header values in `settings` (a custom provider's
extra headers may carry credentials) are masked.
"""

from __future__ import annotations

from typing import Any

from providers.models import OperatorState, ProviderConfig
from tenants import audit

FIELDS = (
    "name", "type", "base_url", "model", "region", "enabled", "priority", "weight", "rate_limit",
    "timeout_seconds", "settings", "cost_input_per_1k", "cost_output_per_1k", "secret_ref",
    "operator_state", "operator_reason", "operator_until",
)  # fmt: skip
OPERATOR_FIELDS = {"operator_state", "operator_reason", "operator_until"}
MASK = "••••"
# Operator-state changes get their own action names, so the log reads "drain", not "update".
OPERATOR_ACTIONS = {
    OperatorState.DRAINED: "drain",
    OperatorState.FORCED_UNHEALTHY: "force_unhealthy",
    OperatorState.FORCED_HEALTHY: "force_healthy",
    OperatorState.NONE: "clear_state",
}


def masked_settings(settings: Any) -> Any:
    if not isinstance(settings, dict):
        return settings
    masked = dict(settings)
    if isinstance(masked.get("headers"), dict):
        masked["headers"] = {name: MASK for name in masked["headers"]}
    return masked


def provider_fields(config: ProviderConfig) -> dict[str, Any]:
    fields = {name: getattr(config, name) for name in FIELDS}
    fields["settings"] = masked_settings(config.settings)
    fields["api_key"] = "set" if config.api_key_encrypted else ""
    return fields


def remember_before(sender, instance: ProviderConfig, raw=False, **kwargs) -> None:
    """pre_save: the stored row's fields and encrypted key, for the entry post_save writes."""
    instance._audit_before = None
    if raw or instance.pk is None:
        return
    stored = ProviderConfig.objects.filter(pk=instance.pk).first()
    if stored is not None:
        instance._audit_before = provider_fields(stored)
        instance._audit_key_before = stored.api_key_encrypted


def record_save(sender, instance: ProviderConfig, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    after = provider_fields(instance)
    before = None if created else getattr(instance, "_audit_before", None)
    action = "create" if created else "update"
    if before is not None:
        if instance.api_key_encrypted and instance.api_key_encrypted != getattr(instance, "_audit_key_before", ""):
            before["api_key"], after["api_key"] = before["api_key"] or "", "replaced"
        changed = {k for k in after if before.get(k) != after[k]}
        if changed and changed <= OPERATOR_FIELDS:
            action = OPERATOR_ACTIONS.get(instance.operator_state, "update")
    audit.record(instance.tenant_id, "provider", action, object_id=instance.pk, object_name=instance.name,
                 before=before, after=after)  # fmt: skip


def record_delete(sender, instance: ProviderConfig, **kwargs) -> None:
    audit.record(instance.tenant_id, "provider", "delete", object_id=instance.pk, object_name=instance.name,
                 before=provider_fields(instance))  # fmt: skip
