from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ProvidersConfig(AppConfig):
    name = "providers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from providers.models import ProviderConfig

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
        deleted=kwargs.get("signal") is post_delete,
    )
