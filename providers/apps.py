from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save, pre_save


class ProvidersConfig(AppConfig):
    name = "providers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from providers import audit
        from providers.models import ProviderConfig

        pre_save.connect(audit.remember_before, sender=ProviderConfig, dispatch_uid="providers-audit-before")
        post_save.connect(audit.record_save, sender=ProviderConfig, dispatch_uid="providers-audit-saved")
        post_delete.connect(audit.record_delete, sender=ProviderConfig, dispatch_uid="providers-audit-deleted")
        post_save.connect(announce_provider_change, sender=ProviderConfig, dispatch_uid="providers-saved")
        post_delete.connect(announce_provider_change, sender=ProviderConfig, dispatch_uid="providers-deleted")


def announce_provider_change(sender, instance, **kwargs) -> None:
    """Every save or delete of a ProviderConfig, from any entry point (API, console,
    admin, commands), becomes events.provider_changed for the layers above."""
    from axonflow_site import events

    events.provider_changed.send(
        sender=None,
        tenant_id=instance.tenant_id,
        provider_id=instance.pk,
        created=kwargs.get("created", False),
        deleted=kwargs.get("signal") is post_delete,
    )
