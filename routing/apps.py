from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from routing import signals  # noqa: F401  (connects the cache invalidation receivers)
        from routing.api import schema  # noqa: F401  (drf-spectacular extensions)
