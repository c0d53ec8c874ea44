"""Cache invalidation on model changes: a provider or tenant change drops the tenant's
routing snapshot; a token or tenant change drops the token cache (in every process)."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from providers.models import ProviderConfig
from routing.cache import invalidate_on_commit
from tenants.models import ApiToken, Tenant


@receiver([post_save, post_delete], sender=ProviderConfig, dispatch_uid="routing-provider-changed")
def provider_changed(sender, instance: ProviderConfig, **kwargs) -> None:
    invalidate_on_commit(instance.tenant_id)


@receiver([post_save, post_delete], sender=Tenant, dispatch_uid="routing-tenant-changed")
def tenant_changed(sender, instance: Tenant, **kwargs) -> None:
    # The token cache holds the tenant's slug and plan.
    invalidate_on_commit(instance.pk, tokens=True)


@receiver([post_save, post_delete], sender=ApiToken, dispatch_uid="routing-token-changed")
def token_changed(sender, instance: ApiToken, **kwargs) -> None:
    invalidate_on_commit(instance.tenant_id, tokens=True)
