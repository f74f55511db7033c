"""Settings shared by every mode. Every value that differs between deployments comes from the
environment (12-factor) through the one ``env`` below."""

from pathlib import Path

import environ
from celery.schedules import crontab

from config.logging import access_logs_scrub, logging_config, structlog_configure

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# --- Core -------------------------------------------------------------------------------------
SECRET_KEY = env("SECRET_KEY", default="dev-insecure-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "django_structlog",
    "corsheaders",
    "workspaces",
    "runner_jobs",
    "job_events",
    "coordinator",
]

MIDDLEWARE = [
    # Outermost: request metrics see every request; the request id is bound for every log line.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "config.logging.RequestIdMiddleware",
    # Before anything that can answer (the request guard, CommonMiddleware, the database
    # guard): their answers to an allowed origin carry CORS headers too, so a page can read
    # its refusals; preflights are answered here. It reads no body.
    "corsheaders.middleware.CorsMiddleware",
    # Malformed requests (an oversized or unsized body, a NUL in the URL, a header that is not
    # text) are refused here, before any body is read or any view runs.
    "config.middleware.RequestGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.ops.DatabaseUnavailableMiddleware",
    # A request reads each workspace's webhook endpoints once, not once per event it writes.
    "job_events.middleware.WebhookEndpointsMemoMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://localhost:5432/runner_jobs")}
# Persistent connections, checked before reuse, so a PostgreSQL restart costs one request at most.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The PostgreSQL backend, counting queries, errors and connections for /metrics.
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].setdefault(
    "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=3)
)
# A session left idle inside a transaction (a frozen worker holding a job's row lock) is ended by
# PostgreSQL after this long, which releases the lock so the sweeper can recover the job.
# See docs/decisions/0004-frozen-lock-holders.md.
DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = env.int(
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", default=30
)
DATABASES["default"]["OPTIONS"].setdefault(
    "options",
    f"-c idle_in_transaction_session_timeout={DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS}s",
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The admin's static files are served by the app itself (no CDN, no separate server).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# An explicit request body limit: a job payload may be 256 KiB, the body a little more. Checked
# against Content-Length before the body is read (config/middleware.py).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=512 * 1024)
# Should DEBUG be on, its error page still hides settings that locate a service or hold a secret.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.errors.SettingsHidingFilter"

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "workspaces.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["runner_jobs.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "runner_jobs.exceptions.api_exception_handler",
    # A per-token quota (RUNNER_API_QUOTA below): fair use, not security.
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.TokenQuotaThrottle"],
}

REST_KNOX = {
    # Tokens are long random strings; knox stores a SHA-512 digest, never the token.
    "TOKEN_TTL": None,
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}

# Coordinator keys (djangorestframework-api-key) travel in "X-API-Key", not "Authorization",
# so a coordinator key and a consumer token can never be mistaken for each other.
API_KEY_CUSTOM_HEADER = "HTTP_X_API_KEY"

SPECTACULAR_SETTINGS = {
    "TITLE": "Runner Jobs API",
    "DESCRIPTION": "Create, follow, cancel and retry background jobs; coordinator reports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from our own static files: the docs work without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Every operation lists every refusal it can answer with (config/schema.py); then the event
    # stream, an async view DRF does not know, with its own list (job_events/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.error_responses",
        "job_events.schema.stream_paths",
    ],
    # Jobs and steps both have a "status"; name their enums after the model's choices.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "runner_jobs.models.JobStatus",
        "StepStatusEnum": "runner_jobs.models.StepStatus",
    },
}

# --- Redis and Celery -------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://localhost:6379/0")

# --- Runner Jobs ------------------------------------------------------------------------------
# Extra job types, as JSON: {"name": {"handler": "dotted.path"} | {"external": true}, ...}, each
# with optional "max_attempts" and "timeout_seconds" (per-attempt time limit).
# The built-in types (echo, sleep, fail, flaky, agent-task) are always registered.
RUNNER_JOB_TYPES: dict[str, dict[str, object]] = env.json("RUNNER_JOB_TYPES", default={})
RUNNER_JOB_LEASE_SECONDS = env.int("RUNNER_JOB_LEASE_SECONDS", default=60)
RUNNER_SWEEP_INTERVAL_SECONDS = env.int("RUNNER_SWEEP_INTERVAL_SECONDS", default=15)
RUNNER_SCHEDULE_TICK_SECONDS = env.float("RUNNER_SCHEDULE_TICK_SECONDS", default=2)
RUNNER_REDISPATCH_AFTER_SECONDS = env.int("RUNNER_REDISPATCH_AFTER_SECONDS", default=120)
RUNNER_MAX_PAYLOAD_BYTES = env.int("RUNNER_MAX_PAYLOAD_BYTES", default=256 * 1024)

# --- Execution: Celery workers and beat -------------------------------------------------------
# An attempt's time limit interrupts the handler (the job fails saying so): the job's
# timeout_seconds, else its type's, else RUNNER_JOB_TIME_LIMIT_SECONDS (an alarm in the worker's
# child process, runner_jobs.execution). A job's timeout_seconds may be up to
# RUNNER_JOB_MAX_TIMEOUT_SECONDS. Celery's soft limit is the backstop at the largest of them; its
# hard limit, a grace period later, kills the child process of a handler that ignored both, and
# the sweeper fails a job still running a grace period past its own limit.
RUNNER_JOB_TIME_LIMIT_SECONDS = env.int("RUNNER_JOB_TIME_LIMIT_SECONDS", default=600)
RUNNER_JOB_MAX_TIMEOUT_SECONDS = env.int(
    "RUNNER_JOB_MAX_TIMEOUT_SECONDS", default=max(3600, RUNNER_JOB_TIME_LIMIT_SECONDS)
)
RUNNER_JOB_HARD_TIME_LIMIT_GRACE_SECONDS = 30
# Transient errors: BACKOFF * 2**(attempt - 1) seconds, with jitter, capped at BACKOFF_MAX.
RUNNER_RETRY_BACKOFF_SECONDS = env.int("RUNNER_RETRY_BACKOFF_SECONDS", default=2)
RUNNER_RETRY_BACKOFF_MAX_SECONDS = env.int("RUNNER_RETRY_BACKOFF_MAX_SECONDS", default=300)

CELERY_BROKER_URL = REDIS_URL
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# No result backend: the job row holds the outcome.
CELERY_TASK_IGNORE_RESULT = True
# A message is acknowledged only after its task ran; a child killed mid-task puts it back.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = max(RUNNER_JOB_TIME_LIMIT_SECONDS, RUNNER_JOB_MAX_TIMEOUT_SECONDS)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + RUNNER_JOB_HARD_TIME_LIMIT_GRACE_SECONDS
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # An unacknowledged message is handed out again after this: it must outlast the longest
    # attempt plus the longest retry countdown (a retry waits out its ETA unacknowledged), or a
    # job still running or waiting would be delivered twice. Celery reads it only from here.
    # At least Celery's 1 h default, which other tasks' countdowns (webhooks) stay below.
    "visibility_timeout": max(
        3600, CELERY_TASK_TIME_LIMIT + RUNNER_RETRY_BACKOFF_MAX_SECONDS + 300
    ),
    # One Redis list per priority 0..9; kombu pops the LOWEST number first (see README).
    "priority_steps": list(range(10)),
    "socket_connect_timeout": 3,
}
# With the broker down a publish gives up within about a second: the API answers at once and
# the job stays pending for the sweeper.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BEAT_SCHEDULE_FILENAME = env(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(BASE_DIR / ".celerybeat-schedule")
)
CELERY_BEAT_SCHEDULE = {
    "sweep": {
        "task": "runner_jobs.sweep",
        "schedule": RUNNER_SWEEP_INTERVAL_SECONDS,
        # A sweep that could not start before the next one is due is dropped, not piled up.
        "options": {"expires": RUNNER_SWEEP_INTERVAL_SECONDS, "priority": 0},
    },
    # Schedules fire within this many seconds of their due time (docs/decisions/0101).
    "fire-schedules": {
        "task": "runner_jobs.fire_schedules",
        "schedule": RUNNER_SCHEDULE_TICK_SECONDS,
        "options": {"expires": RUNNER_SCHEDULE_TICK_SECONDS, "priority": 0},
    },
}

# --- Live events and webhooks -----------------------------------------------------------------
# SSE streams: a keep-alive comment after this much silence; a poll (the safety net under the
# Redis wake-ups) at least this often.
RUNNER_STREAM_KEEPALIVE_SECONDS = env.float("RUNNER_STREAM_KEEPALIVE_SECONDS", default=15)
RUNNER_STREAM_POLL_SECONDS = env.float("RUNNER_STREAM_POLL_SECONDS", default=10)
# Stream reads run on this many threads per web process, each keeping its database connection
# this long (job_events/readers.py): the streams' connections are bounded, whatever their number.
RUNNER_STREAM_DB_THREADS = env.int("RUNNER_STREAM_DB_THREADS", default=4)
RUNNER_STREAM_CONN_MAX_AGE = env.int("RUNNER_STREAM_CONN_MAX_AGE", default=60)
# The reconnect delay a stream asks of EventSource (its "retry:" field) after a dropped
# connection: short enough that a deploy costs a blink, long enough that a web tier restarting
# under thousands of pages is not hit by all of them at once. Browsers' own defaults differ.
RUNNER_STREAM_RETRY_MS = env.int("RUNNER_STREAM_RETRY_MS", default=3000)
# Streams one credential (token, read token, session) may hold open at once; 0 = no cap.
RUNNER_STREAM_MAX_PER_TOKEN = env.int("RUNNER_STREAM_MAX_PER_TOKEN", default=10)

# --- Browsers: CORS ---------------------------------------------------------------------------
# Origins (scheme://host[:port]) whose pages may call the API; none by default. Credentials
# travel as tokens (a header, or a job's read token in the URL), never as cookies.
CORS_ALLOWED_ORIGINS = env.list("RUNNER_CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "idempotency-key",
    "if-match",
    "last-event-id",
]
CORS_EXPOSE_HEADERS = ["ETag", "Location"]
# Webhooks: the timeout of every delivery (connecting, and each wait for the answer), the
# attempts in all, and the exponential backoff between them (base doubled per attempt, capped
# below Redis' 1 h visibility timeout).
RUNNER_WEBHOOK_TIMEOUT_SECONDS = env.float("RUNNER_WEBHOOK_TIMEOUT_SECONDS", default=5)
RUNNER_WEBHOOK_MAX_ATTEMPTS = env.int("RUNNER_WEBHOOK_MAX_ATTEMPTS", default=8)
RUNNER_WEBHOOK_BACKOFF_SECONDS = env.float("RUNNER_WEBHOOK_BACKOFF_SECONDS", default=10)
RUNNER_WEBHOOK_BACKOFF_MAX_SECONDS = env.float("RUNNER_WEBHOOK_BACKOFF_MAX_SECONDS", default=900)
# Deliveries reach public addresses only; these networks (CIDRs) are allowed too, e.g. for
# receivers inside the cluster (docs/decisions/0080-security.md).
RUNNER_WEBHOOK_ALLOWED_NETWORKS = env.list("RUNNER_WEBHOOK_ALLOWED_NETWORKS", default=[])
RUNNER_WEBHOOK_MAX_ENDPOINTS_PER_WORKSPACE = env.int(
    "RUNNER_WEBHOOK_MAX_ENDPOINTS_PER_WORKSPACE", default=20
)
# Deliveries run on their own queue, served by the Procfile's `webhooks` worker, so a slow
# endpoint never holds a worker that runs jobs.
WEBHOOK_QUEUE = "webhooks"
CELERY_TASK_ROUTES = {"job_events.*": {"queue": WEBHOOK_QUEUE}}
CELERY_BEAT_SCHEDULE["webhook-outbox"] = {
    "task": "job_events.send_pending_deliveries",
    "schedule": RUNNER_SWEEP_INTERVAL_SECONDS,
    "options": {"expires": RUNNER_SWEEP_INTERVAL_SECONDS},
}

# --- Operations: logs, metrics, quotas, retention ---------------------------------------------
# JSON lines (LOG_FORMAT=json, the production default) or console lines, from web, worker and
# beat alike; see config/logging.py.
LOG_FORMAT = env("LOG_FORMAT", default="console")
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = logging_config(json=LOG_FORMAT == "json", level=LOG_LEVEL)
structlog_configure()
access_logs_scrub()
# Celery keeps its hands off the root logger, so worker and beat log through LOGGING too; the
# request id of the request that enqueued a task travels with it (django-structlog).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
DJANGO_STRUCTLOG_CELERY_ENABLED = True

# Behind pgbouncer in transaction mode: CONN_MAX_AGE=0 and no server-side cursors (README).
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
    "DATABASE_DISABLE_SERVER_SIDE_CURSORS", default=False
)

# /metrics is open unless one of these is set: a bearer token, or client networks (CIDR).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])
# Terminal job counts are a GROUP BY over the whole table: computed at most this often.
RUNNER_METRICS_TERMINAL_CACHE_SECONDS = env.int(
    "RUNNER_METRICS_TERMINAL_CACHE_SECONDS", default=300
)
# Requests per API token (or coordinator key) per window: "N/second|minute|hour|day".
RUNNER_API_QUOTA = env("RUNNER_API_QUOTA", default="100000/hour")
# How long a web process remembers a consumer token it has checked (no query per request); a
# revoked token is refused everywhere within this many seconds. 0 checks every request.
RUNNER_AUTH_CACHE_SECONDS = env.float("RUNNER_AUTH_CACHE_SECONDS", default=1.0)
# Requests per client address (an IPv6 /64) without a valid credential: none, or a bad one.
RUNNER_ANON_QUOTA = env("RUNNER_ANON_QUOTA", default="1000/hour")
# The daily prune task deletes jobs that ended more than this many days ago.
RUNNER_RETENTION_DAYS = env.int("RUNNER_RETENTION_DAYS", default=30)
CELERY_BEAT_SCHEDULE["prune-jobs"] = {
    "task": "runner_jobs.prune_jobs",
    "schedule": crontab(hour=env.int("RUNNER_RETENTION_HOUR", default=3), minute=30),
}

# --- Bulk operations ----------------------------------------------------------------------------
# A bulk operation whose run stopped progressing (lost message, dead worker) is sent again.
CELERY_BEAT_SCHEDULE["resume-operations"] = {
    "task": "runner_jobs.resume_operations",
    "schedule": 60,
    "options": {"expires": 60},
}
