"""The Celery app: ``celery -A config worker`` and ``celery -A config beat``.

Every setting lives in Django settings under the ``CELERY_`` namespace (config/settings/base.py).
"""

import os

from celery import Celery
from django_structlog.celery.steps import DjangoStructLogInitStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("runner_jobs")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Worker log lines carry the task's id and the request id of the request that enqueued it.
app.steps["worker"].add(DjangoStructLogInitStep)
