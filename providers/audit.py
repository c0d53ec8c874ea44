"""What the audit log keeps of a provider config (tenants/audit.py writes it).

Hooked on the model's signals (providers/apps.py), so every write path is audited:
the API, the console, the admin and commands. The key never appears: only whether one
is set and whether it was replaced (compared decrypted, so re-encrypting the same key,
as `rotate_keys` does, or entering it again is no change). Header values in `settings`
(a custom provider's extra headers may carry credentials) are masked; a changed value
shows as replaced, so a header change is still recorded.
"""

from __future__ import annotations

from typing import Any

from axonflow_site.errors import InvalidConfig
from providers import secrets
from providers.models import OperatorState, ProviderConfig
from tenants import audit

FIELDS = (
    "name", "type", "base_url", "model", "region", "enabled", "priority", "weight", "rate_limit",
    "timeout_seconds", "settings", "cost_input_per_1k", "cost_output_per_1k", "secret_ref",
    "operator_state", "operator_reason", "operator_until",
)  # fmt: skip
OPERATOR_FIELDS = {"operator_state", "operator_reason", "operator_until"}
MASK = "••••"
REPLACED = "•••• (replaced)"
# Operator-state changes get their own action names, so the log reads "drain", not "update".
OPERATOR_ACTIONS = {
    OperatorState.DRAINED: "drain",
    OperatorState.FORCED_UNHEALTHY: "force_unhealthy",
    OperatorState.FORCED_HEALTHY: "force_healthy",
    OperatorState.NONE: "clear_state",
}


def masked_settings(settings: Any, previous: Any = None) -> Any:
    """`settings` with every header value masked; one that differs from `previous`
    (the stored settings) shows as replaced."""
    if not isinstance(settings, dict):
        return settings
    masked = dict(settings)
    if isinstance(masked.get("headers"), dict):
        old = previous.get("headers") if isinstance(previous, dict) else None
        old = old if isinstance(old, dict) else {}
        masked["headers"] = {
            name: REPLACED if name in old and old[name] != value else MASK for name, value in masked["headers"].items()
        }
    return masked


def key_replaced(stored: str, current: str) -> bool:
    """Whether the plain keys behind two encrypted values differ."""
    if stored == current:
        return False
    try:
        return secrets.decrypt(stored) != secrets.decrypt(current)
    except InvalidConfig:  # a value no configured key opens: count it as replaced
        return True


def provider_fields(config: ProviderConfig, stored: ProviderConfig | None = None) -> dict[str, Any]:
    """The audited fields of `config`; with the `stored` row, a replaced key or header
    value is marked as such."""
    fields = {name: getattr(config, name) for name in FIELDS}
    fields["settings"] = masked_settings(config.settings, stored.settings if stored else None)
    fields["api_key"] = "set" if config.api_key_encrypted else ""
    if stored is not None and stored.api_key_encrypted and config.api_key_encrypted:
        if key_replaced(stored.api_key_encrypted, config.api_key_encrypted):
            fields["api_key"] = "replaced"
    return fields


def remember_before(sender, instance: ProviderConfig, raw=False, **kwargs) -> None:
    """pre_save: the stored row, for the entry post_save writes."""
    instance._audit_stored = None
    if raw or instance.pk is None:
        return
    instance._audit_stored = ProviderConfig.objects.filter(pk=instance.pk).first()


def record_save(sender, instance: ProviderConfig, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    stored = None if created else getattr(instance, "_audit_stored", None)
    after = provider_fields(instance, stored)
    before = provider_fields(stored) if stored is not None else None
    action = "create" if created else "update"
    if before is not None:
        changed = {k for k in after if before.get(k) != after[k]}
        if changed and changed <= OPERATOR_FIELDS:
            action = OPERATOR_ACTIONS.get(instance.operator_state, "update")
    audit.record(instance.tenant_id, "provider", action, object_id=instance.pk, object_name=instance.name,
                 before=before, after=after)  # fmt: skip


def record_delete(sender, instance: ProviderConfig, origin=None, **kwargs) -> None:
    if audit.deleting_tenant(origin):
        return
    audit.record(instance.tenant_id, "provider", "delete", object_id=instance.pk, object_name=instance.name,
                 before=provider_fields(instance))  # fmt: skip
