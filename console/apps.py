from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from axonflow_site import events
        from console import live
        from tenants.models import Membership

        events.status_changed.connect(live.on_status_changed, dispatch_uid="console-status-changed")
        events.provider_changed.connect(live.on_provider_changed, dispatch_uid="console-provider-changed")
        events.usage_recorded.connect(live.on_usage_recorded, dispatch_uid="console-usage-recorded")
        post_delete.connect(live.on_membership_deleted, sender=Membership, dispatch_uid="console-member-removed")
