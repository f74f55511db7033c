"""The staff dashboard inside the admin: jobs by status now, throughput and failure rate over the
last 24 hours, queue depth and the age of the oldest queued job, and the job types failing most
with their latest errors. Reads only; every query is served by an index (see
docs/decisions/0040-admin-at-scale.md)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Min
from django.db.models.functions import TruncHour
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from runner_jobs.admin_charts import Series, horizontal_bar_chart, line_chart, stacked_bar_chart
from runner_jobs.admin_paging import EXACT_COUNT_LIMIT, estimated_count
from runner_jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus, RunnerJob

WINDOW_HOURS = 24
TOP_FAILING_TYPES = 5


@dataclass(frozen=True)
class FailingType:
    type: str
    failures: int
    latest_error: str
    latest_job_id: Any
    changelist_url: str


@dataclass(frozen=True)
class HourlyOutcomes:
    hours: list[datetime]
    completed: list[int]
    failed: list[int]

    @property
    def failure_rates(self) -> list[float | None]:
        """Failed share of finished jobs per hour, in percent; None for an hour with none."""
        return [
            100 * f / (c + f) if c + f else None
            for c, f in zip(self.completed, self.failed, strict=True)
        ]


def format_duration(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def jobs_by_status() -> dict[str, int]:
    """Jobs per status: exact for the live ones (a small partial index), PostgreSQL's estimate
    for a finished status past ``EXACT_COUNT_LIMIT`` jobs (an exact count of a million rows
    would cost the page a second)."""
    live: dict[str, int] = dict(
        RunnerJob.objects.filter(status__in=ACTIVE_STATUSES)
        .order_by()
        .values_list("status")
        .annotate(n=Count("*"))
        .values_list("status", "n")
    )
    finished: dict[str, int] = {
        str(status): estimated_count(RunnerJob.objects.filter(status=status))
        for status in TERMINAL_STATUSES
    }
    counts = {**live, **finished}
    return {status: counts.get(status, 0) for status in JobStatus.values}


def hourly_outcomes(*, now: datetime, hours: int = WINDOW_HOURS) -> HourlyOutcomes:
    """Jobs that completed and failed in each of the last ``hours`` hours (by ``completed_at``)."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    buckets = [start + timedelta(hours=i) for i in range(hours)]
    rows = (
        RunnerJob.objects.filter(
            completed_at__gte=start, status__in=[JobStatus.COMPLETED, JobStatus.FAILED]
        )
        .order_by()
        .annotate(hour=TruncHour("completed_at"))
        .values_list("hour", "status")
        .annotate(n=Count("*"))
    )
    found = {(hour, status): n for hour, status, n in rows}
    return HourlyOutcomes(
        hours=buckets,
        completed=[found.get((h, JobStatus.COMPLETED), 0) for h in buckets],
        failed=[found.get((h, JobStatus.FAILED), 0) for h in buckets],
    )


def oldest_queued_at() -> datetime | None:
    return RunnerJob.objects.filter(status=JobStatus.QUEUED).aggregate(t=Min("queued_at"))["t"]


def top_failing_types(*, since: datetime, limit: int = TOP_FAILING_TYPES) -> list[FailingType]:
    """The types with the most failures since ``since``, each with its latest error."""
    failed = RunnerJob.objects.filter(status=JobStatus.FAILED, completed_at__gte=since).order_by()
    top = failed.values_list("type").annotate(n=Count("*")).order_by("-n", "type")[:limit]
    changelist = reverse("admin:runner_jobs_runnerjob_changelist")
    result = []
    for job_type, n in top:
        latest = failed.filter(type=job_type).order_by("-completed_at").values("id", "error")[0]
        query = urlencode({"status__exact": JobStatus.FAILED, "type": job_type})
        result.append(
            FailingType(
                type=job_type,
                failures=n,
                latest_error=latest["error"],
                latest_job_id=latest["id"],
                changelist_url=f"{changelist}?{query}",
            )
        )
    return result


def dashboard_view(request: HttpRequest, admin_context: dict[str, Any]) -> HttpResponse:
    now = timezone.now()
    statuses = jobs_by_status()
    outcomes = hourly_outcomes(now=now)
    oldest = oldest_queued_at()
    labels = [h.strftime("%H:00") for h in outcomes.hours]
    changelist = reverse("admin:runner_jobs_runnerjob_changelist")
    context = {
        **admin_context,
        "title": "Jobs dashboard",
        "generated_at": now,
        "status_rows": [
            (status, n, n > EXACT_COUNT_LIMIT, f"{changelist}?status__exact={status}")
            for status, n in statuses.items()
        ],
        "status_chart": horizontal_bar_chart(
            title="Jobs by status",
            rows=[(status, n, f"rj-fill-{status}") for status, n in statuses.items()],
        ),
        "throughput_chart": stacked_bar_chart(
            title=f"Finished jobs per hour, last {WINDOW_HOURS} hours",
            labels=labels,
            series=[
                Series("completed", "rj-fill-completed", outcomes.completed),
                Series("failed", "rj-fill-failed", outcomes.failed),
            ],
        ),
        "failure_rate_chart": line_chart(
            title=f"Failure rate per hour, last {WINDOW_HOURS} hours",
            labels=labels,
            values=outcomes.failure_rates,
            suffix="%",
            top=100,
        ),
        "finished_24h": sum(outcomes.completed) + sum(outcomes.failed),
        "failed_24h": sum(outcomes.failed),
        "queue_depth": statuses[JobStatus.QUEUED],
        "pending": statuses[JobStatus.PENDING],
        "running": statuses[JobStatus.RUNNING],
        "oldest_queued_age": format_duration(now - oldest) if oldest else None,
        "failing_types": top_failing_types(since=now - timedelta(hours=WINDOW_HOURS)),
        "changelist_url": changelist,
    }
    return TemplateResponse(request, "admin/runner_jobs/dashboard.html", context)
