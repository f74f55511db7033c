"""Settings of the benchmark's peer process alone: Procrastinate's Django integration in a Django
project of its own, on a database of its own (``BENCH_PEER_DATABASE_URL``, on the bench stack's
PostgreSQL cluster). Nothing of the product is installed here, and the product's settings know
nothing of Procrastinate."""

import environ

env = environ.Env()

SECRET_KEY = "bench-peer-signs-nothing"
USE_TZ = True
INSTALLED_APPS = ["procrastinate.contrib.django"]
DATABASES = {"default": env.db_url("BENCH_PEER_DATABASE_URL")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The peer's task module; no other app has tasks to discover.
PROCRASTINATE_IMPORT_PATHS = ["bench.peer_tasks"]
PROCRASTINATE_AUTODISCOVER_MODULE_NAME = ""
