from django.apps import AppConfig


class JobEventsConfig(AppConfig):
    """Delivery of job events (streams, webhooks): a layer above ``runner_jobs``."""

    name = "job_events"
    verbose_name = "Job events"

    def ready(self) -> None:
        # Imported here, not at the top: apps' modules may only be imported once the app
        # registry is ready.
        from job_events.listeners import events_committed, events_recorded
        from runner_jobs.services.events import event_listener_register, event_recorder_register

        event_recorder_register(events_recorded)
        event_listener_register(events_committed)
