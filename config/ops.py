"""What an operator's tooling talks to: liveness, readiness, Prometheus metrics, and the
middleware that turns a database outage into 503s instead of 500s or hangs."""

import hmac
import ipaddress
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import redis
import structlog
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import CollectorRegistry, generate_latest

from config.redis_client import redis_client

logger = structlog.get_logger("runner_jobs.ops")

READINESS_TIMEOUT_SECONDS = 2.0
DATABASE_RETRY_AFTER_SECONDS = 5

# Each check runs in its own thread, so a dependency that hangs (rather than refusing) costs
# the probe READINESS_TIMEOUT_SECONDS, not the server's connect or socket timeouts.
_checks_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def _database_check() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # A thread of its own: its connection must not outlive the check.
        connection.close()


def _broker_check() -> None:
    redis_client(timeout=READINESS_TIMEOUT_SECONDS / 2).ping()


READINESS_CHECKS: dict[str, Callable[[], None]] = {
    "database": _database_check,
    "broker": _broker_check,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches no dependency, so an outage elsewhere never gets
    a healthy process restarted."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: PostgreSQL and the broker both answer within the timeout; 503 names the
    dependency that did not."""
    futures = {name: _checks_pool.submit(check) for name, check in READINESS_CHECKS.items()}
    deadline = time.monotonic() + READINESS_TIMEOUT_SECONDS
    checks: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            checks[name] = "ok"
        except FutureTimeout:
            checks[name] = f"timed out after {READINESS_TIMEOUT_SECONDS:g} s"
        except (DatabaseError, redis.RedisError) as exc:
            # The reason goes to the log only: it may name hosts and ports.
            checks[name] = "error"
            errors[name] = str(exc)
    failed = [name for name, outcome in checks.items() if outcome != "ok"]
    if not failed:
        return JsonResponse({"status": "ok", "checks": checks})
    logger.warning("not_ready", failed=failed, checks=checks, errors=errors)
    return JsonResponse(
        {
            "status": "unavailable",
            "detail": f"Unavailable: {', '.join(failed)}.",
            "code": "not_ready",
            "checks": checks,
        },
        status=503,
    )


# Appended to /metrics after django-prometheus's own; apps register their collectors here in
# ``AppConfig.ready`` (config imports no app).
metrics_registry = CollectorRegistry(auto_describe=False)


def _metrics_allowed(request: HttpRequest) -> bool:
    """Open unless ``METRICS_TOKEN`` or ``METRICS_ALLOWED_NETWORKS`` is set; then a matching
    bearer token or a client address in one of the networks is required."""
    token: str = settings.METRICS_TOKEN
    networks: list[str] = settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return True
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if sent and hmac.compare_digest(sent.encode(), token.encode()):
            return True
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(net, strict=False) for net in networks)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: django-prometheus's request and database metrics (this process,
    or every process on the host with ``PROMETHEUS_MULTIPROC_DIR``), then the job metrics."""
    if not _metrics_allowed(request):
        return JsonResponse(
            {"detail": "Not allowed to read metrics.", "code": "permission_denied"}, status=403
        )
    response = ExportToDjangoView(request)
    response.content += generate_latest(metrics_registry)
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view that loses PostgreSQL answers 503 with ``Retry-After``, in the API's error shape.

    Connections are checked before reuse (``CONN_HEALTH_CHECKS``) and connect with a short
    timeout, so once PostgreSQL is back the next request reconnects by itself."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.error("database_unavailable", path=request.path, error=str(exception))
        response = JsonResponse(
            {"detail": "The database is unavailable; try again shortly.", "code": "unavailable"},
            status=503,
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
