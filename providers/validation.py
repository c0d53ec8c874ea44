"""The one rule set for provider configs, used by the API serializer, console forms,
Django admin and management commands alike.

`validate_provider_config(tenant, data, instance=None)` returns cleaned values or
raises the AxonFlowError whose code the API returns (validation_error,
invalid_config, license_required, duplicate_provider). It changes nothing;
`apply_provider_config` then writes cleaned values onto a model instance.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from axonflow_site.errors import DuplicateProvider, ValidationFailed
from providers import egress, secrets
from providers.licensing import check_license
from providers.models import ProviderConfig, ProviderType
from tenants.models import Tenant

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
RESERVED_NAMES = {"auto"}
WRITABLE_FIELDS = {
    "name", "type", "api_key", "secret_ref", "base_url", "model", "models", "region", "enabled", "priority",
    "weight", "rate_limit", "timeout_seconds", "settings", "cost_input_per_1k", "cost_output_per_1k",
}  # fmt: skip
INT_RANGES = {
    "weight": (0, 100),
    "priority": (-1000, 1000),
    "timeout_seconds": (1, 600),
    "rate_limit": (0, 1_000_000),
}
NEEDS_BASE_URL = {ProviderType.OLLAMA, ProviderType.CUSTOM}
MAX_MODELS = 100


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", {"field": field})


def _int(field: str, value: Any) -> int:
    low, high = INT_RANGES[field]
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()):
            value = int(value)
        else:
            raise _fail(field, "must be an integer")
    if not low <= value <= high:
        raise _fail(field, f"must be between {low} and {high}")
    return value


def _str(field: str, value: Any, max_length: int) -> str:
    if not isinstance(value, str):
        raise _fail(field, "must be a string")
    value = value.strip()
    if len(value) > max_length:
        raise _fail(field, f"must be at most {max_length} characters")
    return value


def _cost(field: str, value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _fail(field, "must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _fail(field, "must be a number") from None
    if not amount.is_finite() or amount < 0 or amount > 1_000_000:
        raise _fail(field, "must be between 0 and 1000000")
    return amount.quantize(Decimal("0.000001"))


def _base_url(value: Any) -> str:
    """The normalised URL; the egress guard (SPEC §6) raises invalid_config for a refused one."""
    value = _str("base_url", value, 500)
    return egress.check_base_url(value) if value else ""


def _clean_field(field: str, value: Any) -> Any:
    if field in INT_RANGES:
        return _int(field, value)
    if field == "enabled":
        if not isinstance(value, bool):
            raise _fail(field, "must be true or false")
        return value
    if field == "settings":
        if not isinstance(value, dict):
            raise _fail(field, "must be an object")
        return value
    if field in ("cost_input_per_1k", "cost_output_per_1k"):
        return _cost(field, value)
    if field == "base_url":
        return _base_url(value)
    if field == "api_key":
        return _str(field, value, 1000)
    if field == "secret_ref":
        return _str(field, value, 500)
    if field == "name":
        value = _str(field, value, 64)
        if not NAME_RE.match(value) or value.lower() in RESERVED_NAMES:
            raise _fail(field, "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value
    if field == "model":
        return _str(field, value, 200)
    if field == "models":
        return _models(value)
    if field == "region":
        return _str(field, value, 50)
    if field == "type":
        return _str(field, value, 20)
    raise _fail(field, "unknown field")  # pragma: no cover - guarded by WRITABLE_FIELDS


def _models(value: Any) -> list[str]:
    """The served model names: distinct non-empty strings, in the order given."""
    if not isinstance(value, list) or len(value) > MAX_MODELS:
        raise _fail("models", f"must be a list of at most {MAX_MODELS} model names")
    names: list[str] = []
    for item in value:
        name = _str("models", item, 200)
        if not name:
            raise _fail("models", "model names cannot be empty")
        if name.lower() == "auto":
            raise _fail("models", "'auto' is reserved")
        if name not in names:
            names.append(name)
    return names


def _current(instance: ProviderConfig | None, field: str) -> Any:
    if instance is None:
        return {"enabled": True, "settings": {}, "models": []}.get(field, "")
    return getattr(instance, field, "")


def validate_provider_config(
    tenant: Tenant, data: dict[str, Any], instance: ProviderConfig | None = None
) -> dict[str, Any]:
    """Validate a full (create) or partial (update) set of provider fields."""
    if not isinstance(data, dict):
        raise ValidationFailed("Expected a JSON object.")
    unknown = sorted(set(data) - WRITABLE_FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown field(s): {', '.join(unknown)}", {"fields": unknown})
    cleaned = {field: _clean_field(field, value) for field, value in data.items()}

    def final(field: str) -> Any:
        return cleaned[field] if field in cleaned else _current(instance, field)

    if instance is None:
        for field in ("name", "type", "model"):
            if not final(field):
                raise _fail(field, "is required")
    if "model" in cleaned and not cleaned["model"]:
        raise _fail("model", "is required")
    if "name" in cleaned and not cleaned["name"]:
        raise _fail("name", "is required")

    provider_type = final("type")
    from providers.registry import available_types, check_settings

    if provider_type not in available_types():
        raise _fail("type", f"must be one of {', '.join(sorted(available_types()))}")
    if instance is not None and "type" in cleaned and cleaned["type"] != instance.type:
        raise _fail("type", "cannot be changed; create a new provider instead")
    check_license(tenant, provider_type)

    settings = final("settings") or {}
    has_factory = provider_type == ProviderType.CUSTOM and bool(settings.get("factory"))
    if provider_type in NEEDS_BASE_URL and not final("base_url") and not has_factory:
        raise _fail("base_url", f"is required for {provider_type} providers")
    if provider_type == ProviderType.BEDROCK:
        if not final("region"):
            raise _fail("region", "is required for bedrock providers")
        if not REGION_RE.match(final("region")):
            raise _fail("region", "must be an AWS region such as us-east-1")
        if final("base_url"):
            egress.check_bedrock_endpoint(final("base_url"))
    if instance is None or "settings" in cleaned:  # parsed as the adapter will: a 400 now, not a 500 later
        check_settings(tenant, provider_type, settings)
    if cleaned.get("secret_ref"):
        secrets.check_reference(cleaned["secret_ref"], tenant.slug)

    name = final("name")
    taken = ProviderConfig.objects.filter(tenant=tenant, name=name)
    if instance is not None:
        taken = taken.exclude(pk=instance.pk)
    if "name" in cleaned and taken.exists():
        raise DuplicateProvider(f"A provider named '{name}' already exists.", {"field": "name", "name": name})
    # Rule 0 must stay unambiguous: provider and model route names share one namespace.
    renamed = "name" in cleaned and (instance is None or name != instance.name)
    if renamed and tenant.model_routes.filter(name=name).exists():
        message = f"A model route named '{name}' already exists; routes and providers share one set of names."
        raise DuplicateProvider(message, {"field": "name", "name": name})
    return cleaned


def apply_provider_config(config: ProviderConfig, cleaned: dict[str, Any]) -> ProviderConfig:
    """Write cleaned values onto `config` (not saved); the key is encrypted here."""
    for field, value in cleaned.items():
        if field == "api_key":
            secrets.set_api_key(config, value)
        else:
            setattr(config, field, value)
    if cleaned.get("secret_ref"):
        config.api_key_encrypted, config.api_key_last4 = "", ""
    elif cleaned.get("api_key"):
        config.secret_ref = ""
    return config
