"""Logging for web, worker and beat: structlog in front of the standard library, so Django's,
Celery's and gunicorn's own records and our structured ones leave through one formatter.

JSON, one object per line, in production (``LOG_FORMAT=json``); coloured console lines in
development. Every line carries the context bound in ``structlog.contextvars``: the request id
(``RequestIdMiddleware``), and ``job_id``, ``workspace_id``, ``actor`` where a job is written.
"""

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# An upstream id (load balancer, caller) is kept when it looks like an id, else replaced.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{8,64}")

# Read tokens travel in URLs (``?access_token=``, all that EventSource can send): an access log
# line must never carry one. Matches the parameter in a URL or a query string.
_ACCESS_TOKEN = re.compile(r"((?:^|[?&])access_token=)[^&#\s\"]*", re.IGNORECASE)
# The loggers that write request lines with their query string: uvicorn's (our web tier, under
# gunicorn), gunicorn's own and runserver's.
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "django.server")

SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_config(*, json: bool, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict: every record, ours or a library's, through structlog's formatter."""
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": SHARED_PROCESSORS,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structlog"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Our access line (request_finished) replaces Django's own per-request warnings.
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "ERROR"},
        },
    }


def url_scrub(text: str) -> str:
    """``text`` with the value of every ``access_token`` URL parameter replaced."""
    return _ACCESS_TOKEN.sub(r"\1[redacted]", text)


class AccessTokenScrubber(logging.Filter):
    """Rewrites a log record's message and arguments without ``access_token`` values (uvicorn
    passes the URL as an argument; gunicorn a dict of fields; others an f-string message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = url_scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(url_scrub(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: url_scrub(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def access_logs_scrub() -> None:
    """Attach the scrubber to the access loggers. By hand, not through ``LOGGING``: gunicorn's
    worker gives ``uvicorn.access`` its handlers before Django configures logging, and
    configuring that logger there would replace them."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, AccessTokenScrubber) for f in logger.filters):
            logger.addFilter(AccessTokenScrubber())


def structlog_configure() -> None:
    """Route structlog's loggers into the standard library (configured by ``LOGGING``)."""
    structlog.configure(
        processors=[
            *SHARED_PROCESSORS,
            structlog.stdlib.filter_by_level,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


access_logger = structlog.get_logger("runner_jobs.access")


class RequestIdMiddleware:
    """Give each request an id (the caller's ``X-Request-ID`` when it is sane), bind it to every
    log line of the request, echo it in the response, and log one access line at the end.

    Sync only: whitenoise, further in, is sync only, so Django adapts the stack at that point
    for an async view (the event streams) whatever this middleware supports."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        upstream = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = upstream if REQUEST_ID_PATTERN.fullmatch(upstream) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            access_logger.log(
                logging.WARNING if response.status_code >= 500 else logging.INFO,
                "request_finished",
                method=request.method,
                # The path only: a query string may hold a read token (``access_token``).
                path=request.path,
                status=response.status_code,
                # Time to the response's headers (a stream goes on after it).
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
            return response
        finally:
            structlog.contextvars.clear_contextvars()
