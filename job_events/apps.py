from django.apps import AppConfig


class JobEventsConfig(AppConfig):
    """Delivery of job events (streams, webhooks): a layer above ``runner_jobs``."""

    name = "job_events"
    verbose_name = "Job events"

    def ready(self) -> None:
        # Imported here, not at the top: apps' modules may only be imported once the app
        # registry is ready. The tasks module connects the per-task endpoint memo to Celery's
        # task signals, in every process (a worker's, or one that runs a task eagerly).
        from job_events import tasks  # noqa: F401
        from job_events.listeners import events_committed, events_recorded
        from runner_jobs.services.events import event_listener_register, event_recorder_register

        event_recorder_register(events_recorded)
        event_listener_register(events_committed)
