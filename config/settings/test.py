"""Test mode: the real PostgreSQL and Redis, a database of its own per run."""

from .base import *  # noqa: F403
from .base import DATABASES, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Lets parallel runs (or sessions) on one PostgreSQL keep out of each other's way.
DATABASES["default"]["TEST"] = {"NAME": "test_runner_jobs" + env("TEST_DB_SUFFIX", default="")}
DATABASES["default"]["CONN_MAX_AGE"] = 0
# Stream reader threads outlive a test's server: they must not hold the test database open.
RUNNER_STREAM_CONN_MAX_AGE = 0
# No collectstatic before tests: plain storage, no manifest.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Tests revoke tokens and expect the next request refused; tests/api/test_auth_cache.py turns
# the memory on.
RUNNER_AUTH_CACHE_SECONDS = 0.0
# The whole suite calls from one address; the anonymous quota's own tests set a small one.
RUNNER_ANON_QUOTA = "1000000/hour"
