from django.apps import AppConfig


class RunnerJobsConfig(AppConfig):
    name = "runner_jobs"
    verbose_name = "Runner jobs"
