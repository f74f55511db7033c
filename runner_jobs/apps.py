from django.apps import AppConfig


class RunnerJobsConfig(AppConfig):
    name = "runner_jobs"
    verbose_name = "Runner jobs"

    def ready(self) -> None:
        # Imported here, not at the top: models may only be imported once the app registry is
        # ready, and the collector reads them.
        from config.ops import metrics_registry
        from runner_jobs import heartbeat  # noqa: F401  (connects the worker's heartbeat)
        from runner_jobs.metrics import RunnerJobsCollector

        metrics_registry.register(RunnerJobsCollector())
