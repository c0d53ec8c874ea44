"""Which provider types each plan may use."""

from __future__ import annotations

from axonflow_site.errors import LicenseRequired
from providers.models import ProviderType
from tenants.models import Plan, Tenant

OSS_TYPES = (ProviderType.OPENAI, ProviderType.ANTHROPIC, ProviderType.OLLAMA)
ENTERPRISE_TYPES = (ProviderType.BEDROCK, ProviderType.GEMINI, ProviderType.CUSTOM)

PLAN_TYPES: dict[str, frozenset[str]] = {
    Plan.COMMUNITY: frozenset(OSS_TYPES),
    Plan.ENTERPRISE: frozenset(OSS_TYPES + ENTERPRISE_TYPES),
}


def required_plan(provider_type: str) -> str:
    return Plan.COMMUNITY if provider_type in PLAN_TYPES[Plan.COMMUNITY] else Plan.ENTERPRISE


def check_license(tenant: Tenant, provider_type: str) -> None:
    """Raise LicenseRequired unless the tenant's plan includes `provider_type`."""
    if provider_type not in PLAN_TYPES.get(tenant.plan, frozenset()):
        needed = required_plan(provider_type)
        raise LicenseRequired(
            f"Provider type '{provider_type}' requires the {needed} plan; tenant '{tenant.slug}' "
            f"is on the {tenant.plan} plan.",
            {"provider_type": provider_type, "required_tier": needed, "current_tier": tenant.plan},
        )
