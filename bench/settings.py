"""Settings of the benchmark stack: production mode, plus the baselines' URL and task.

Served over plain HTTP on the loopback (there is no TLS proxy in front), so the HTTPS redirect
and the secure-only cookies of production mode are off; everything else is production's.
"""

from config.settings.production import *  # noqa: F403
from config.settings.production import env

ROOT_URLCONF = "bench.urls"
CELERY_IMPORTS = ["bench.tasks"]

SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# collectstatic writes into the stack's own directory, not the working tree.
STATIC_ROOT = env("BENCH_STATIC_ROOT")
