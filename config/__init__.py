# The Celery app is loaded with Django, so task names and ``shared_task`` bind to it everywhere.
from .celery import app as celery_app

__all__ = ["celery_app"]
