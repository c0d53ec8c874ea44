from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"

    def ready(self) -> None:
        from axonflow_site import events
        from console import live

        events.status_changed.connect(live.on_status_changed, dispatch_uid="console-status-changed")
