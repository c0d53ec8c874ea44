"""The routing cache's receivers: what drops a tenant's snapshot (and the token cache)
in this process and, through the channel layer, in every other.

- a provider was saved or deleted (events.provider_changed, sent by providers/);
- a provider's health status moved (events.status_changed with changed=True, sent by
  routing/health/probes.py after a probe or a circuit change);
- a tenant or an API token was saved or deleted (model signals: the token cache holds
  the tenant's slug and plan);
- a model route or one of its targets was saved or deleted (the snapshot keeps them
  for SPEC §2 rule 0);
- a budget was saved or deleted (the snapshot keeps the enabled ones).
"""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from axonflow_site import events
from providers.models import ModelRoute, ModelRouteTarget
from routing.cache import broadcast_invalidation, invalidate_on_commit
from tenants.models import ApiToken, Tenant
from usage.models import Budget


@receiver(events.provider_changed, dispatch_uid="routing-provider-changed")
def provider_changed(sender, *, tenant_id: int, **kwargs) -> None:
    invalidate_on_commit(tenant_id)


@receiver(events.status_changed, dispatch_uid="routing-status-changed")
def status_changed(sender, *, tenant_id: int, changed: bool, **kwargs) -> None:
    # Sent after the new status is committed; health updates use queryset.update(),
    # which sends no model signal.
    if changed:
        broadcast_invalidation(tenant_id)


@receiver([post_save, post_delete], sender=Tenant, dispatch_uid="routing-tenant-changed")
def tenant_changed(sender, instance: Tenant, **kwargs) -> None:
    invalidate_on_commit(instance.pk, tokens=True)


@receiver([post_save, post_delete], sender=ApiToken, dispatch_uid="routing-token-changed")
def token_changed(sender, instance: ApiToken, **kwargs) -> None:
    invalidate_on_commit(instance.tenant_id, tokens=True)


@receiver([post_save, post_delete], sender=ModelRoute, dispatch_uid="routing-route-changed")
@receiver([post_save, post_delete], sender=ModelRouteTarget, dispatch_uid="routing-route-target-changed")
def route_changed(sender, instance, **kwargs) -> None:
    invalidate_on_commit(instance.tenant_id)


@receiver([post_save, post_delete], sender=Budget, dispatch_uid="routing-budget-changed")
def budget_changed(sender, instance: Budget, **kwargs) -> None:
    invalidate_on_commit(instance.tenant_id)
