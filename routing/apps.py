from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from axonflow_site import events, metrics
        from routing import signals  # noqa: F401  (connects the cache invalidation receivers)
        from routing.api import schema  # noqa: F401  (drf-spectacular extensions)
        from routing.health import probes

        events.circuit_changed.connect(probes.on_circuit_changed, dispatch_uid="routing-circuit-changed")
        metrics.enabled = settings.AXONFLOW_METRICS
        metrics.tenant_labels = settings.AXONFLOW_METRICS_TENANT_LABELS
