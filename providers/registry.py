"""Registry of provider factories: type -> callable(ProviderConfig) -> Provider.

Built-in types map to dotted paths and are imported on first use, so optional SDKs
(botocore) stay optional. Operators add their own factories through the
AXONFLOW_PROVIDER_FACTORIES setting ({"name": "package.module.factory"}); a provider
of type `custom` whose settings say {"factory": "name"} is built by that factory.

`check_settings` is the save-time half of `build`: it parses `settings` exactly as the
adapter will, so a bad value is a 400 when saved rather than a failure on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.module_loading import import_string

from axonflow_site.errors import InvalidConfig
from providers.licensing import ENTERPRISE_TYPES, OSS_TYPES, check_license

if TYPE_CHECKING:
    from providers.adapters.base import Provider
    from providers.models import ProviderConfig
    from tenants.models import Tenant

Factory = Callable[["ProviderConfig"], "Provider"]

FACTORIES: dict[str, str] = {
    "openai": "providers.adapters.openai.OpenAIProvider",
    "anthropic": "providers.adapters.anthropic.AnthropicProvider",
    "ollama": "providers.adapters.ollama.OllamaProvider",
    "gemini": "providers.adapters.gemini.GeminiProvider",
    "bedrock": "providers.adapters.bedrock.BedrockProvider",
    "custom": "providers.adapters.custom.CustomProvider",
}
_registered: dict[str, Factory] = {}
_loaded: dict[str, Factory] = {}


def register_factory(name: str, factory: Factory | str) -> None:
    """Register a factory (or its dotted path) under `name`, replacing any earlier one."""
    _loaded.pop(name, None)
    _registered[name] = import_string(factory) if isinstance(factory, str) else factory


def custom_factories() -> dict[str, Factory]:
    """User factories: from settings, then from register_factory()."""
    found = {name: path for name, path in settings.AXONFLOW_PROVIDER_FACTORIES.items()}
    result: dict[str, Factory] = {}
    for name, path in found.items():
        if name not in _loaded:
            _loaded[name] = import_string(path)
        result[name] = _loaded[name]
    result.update(_registered)
    return result


def _builtin(provider_type: str) -> Factory:
    if provider_type not in _loaded:
        try:
            _loaded[provider_type] = import_string(FACTORIES[provider_type])
        except ImportError as exc:
            raise InvalidConfig(
                f"The {provider_type} adapter cannot be loaded: {exc}", {"provider_type": provider_type}
            ) from None
    return _loaded[provider_type]


def get_oss_providers() -> list[str]:
    return [str(t) for t in OSS_TYPES]


def get_enterprise_providers() -> list[str]:
    return [str(t) for t in ENTERPRISE_TYPES]


def available_types() -> set[str]:
    return set(FACTORIES)


def validate_provider_access(tenant: Tenant, provider_type: str) -> None:
    """Raise LicenseRequired if the tenant's plan does not include the type."""
    check_license(tenant, provider_type)


def _factory_for(provider_type: str, raw: Mapping[str, Any]) -> Factory:
    """The factory that builds a config of this type and settings. Raises InvalidConfig
    for an unknown type or factory name."""
    factory_name = raw.get("factory") if provider_type == "custom" else None
    if factory_name not in (None, ""):
        if not isinstance(factory_name, str):
            raise InvalidConfig("settings.factory must be the name of a registered factory.", {"field": "settings"})
        factory = custom_factories().get(factory_name)
        if factory is None:
            raise InvalidConfig(
                f"No provider factory named '{factory_name[:100]}' is registered.",
                {"field": "settings", "setting": "factory", "factory": factory_name[:100]},
            )
        return factory
    if provider_type not in FACTORIES:
        raise InvalidConfig(f"Unknown provider type '{provider_type}'.", {"provider_type": provider_type})
    return _builtin(provider_type)


def build(config: ProviderConfig) -> Provider:
    """A Provider for `config`. Raises InvalidConfig for an unknown type or factory."""
    return _factory_for(config.type, config.settings or {})(config)


def check_settings(tenant: Tenant, provider_type: str, raw: Mapping[str, Any]) -> None:
    """Raise InvalidConfig (naming the setting) unless `raw` are settings the adapter
    for this type will accept from this tenant: its `settings_class.parse` (unknown
    keys, wrong types, clock settings), the factory lookup, and its `check_tenant` hook
    for rules that depend on the owner (bedrock: the server's AWS credentials).

    A registered factory without a `settings_class` owns its keys; only the clock
    settings (providers.adapters.http.CLOCK_SETTINGS) are checked for it."""
    from providers.adapters.http import CLOCK_SETTINGS, clock_setting

    if "factory" in raw and provider_type != "custom":
        raise InvalidConfig(
            "settings.factory is only for custom providers.", {"field": "settings", "setting": "factory"}
        )
    factory = _factory_for(provider_type, raw)
    settings_class = getattr(factory, "settings_class", None)
    if settings_class is None:
        for name in CLOCK_SETTINGS:
            clock_setting(raw, name)
        return
    parsed = settings_class.parse(raw)
    check_tenant = getattr(factory, "check_tenant", None)
    if check_tenant is not None:
        check_tenant(parsed, tenant.slug)
