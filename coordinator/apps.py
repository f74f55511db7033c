from django.apps import AppConfig


class CoordinatorConfig(AppConfig):
    name = "coordinator"
    verbose_name = "Coordinator"

    def ready(self) -> None:
        from . import schema  # noqa: F401  (registers the X-API-Key scheme with drf-spectacular)
