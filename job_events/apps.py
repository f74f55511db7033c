from django.apps import AppConfig


class JobEventsConfig(AppConfig):
    name = "job_events"
    verbose_name = "Job events"
