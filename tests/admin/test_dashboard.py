"""The staff dashboard: figures, charts, permissions."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.html import escape

from runner_jobs import services
from runner_jobs.admin_charts import Series, horizontal_bar_chart, line_chart, stacked_bar_chart
from runner_jobs.admin_dashboard import (
    HourlyOutcomes,
    hourly_outcomes,
    jobs_by_status,
    oldest_queued_at,
    top_failing_types,
)
from tests.admin.conftest import staff_client
from tests.factories import job_in_state

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/runner_jobs/runnerjob/dashboard/"


def failed_job(type: str, error: str):
    job = job_in_state("running", type=type, payload={"seconds": 0})
    return services.job_fail(job_id=job.pk, error=error, actor="worker")


def test_dashboard_shows_figures_and_charts(admin_client_bob):
    job_in_state("completed")
    job_in_state("running")
    first_queued = job_in_state("queued")
    job_in_state("queued")
    failed_job("fail", "first <error>")
    latest = failed_job("fail", "second <error>")
    failed_job("sleep", "slept badly")
    response = admin_client_bob.get(DASHBOARD)
    assert response.status_code == 200
    body = response.content.decode()
    context = response.context
    assert context["queue_depth"] == 2
    assert context["running"] == 1
    assert context["finished_24h"] == 4
    assert context["failed_24h"] == 3
    assert context["oldest_queued_age"] is not None
    assert body.count('<svg class="rj-chart"') == 3
    assert 'aria-label="Jobs by status"' in body
    assert [(f.type, f.failures, f.latest_error) for f in context["failing_types"]] == [
        ("fail", 2, "second <error>"),
        ("sleep", 1, "slept badly"),
    ]
    assert context["failing_types"][0].latest_job_id == latest.pk
    assert escape("second <error>") in body
    assert "second <error>" not in body
    assert "?status__exact=failed&amp;type=fail" in body
    assert oldest_queued_at() == first_queued.queued_at


def test_dashboard_when_nothing_happened(admin_client_bob):
    response = admin_client_bob.get(DASHBOARD)
    assert response.status_code == 200
    assert response.context["oldest_queued_age"] is None
    assert response.context["failing_types"] == []
    assert "No failures in the last 24 hours." in response.content.decode()


def test_dashboard_needs_the_view_permission(db):
    assert staff_client("nemo").get(DASHBOARD).status_code == 403
    assert staff_client("vera", "view_runnerjob").get(DASHBOARD).status_code == 200


def test_jobs_by_status_lists_every_status():
    job_in_state("failed")
    counts = jobs_by_status()
    assert counts == {
        "pending": 0,
        "queued": 0,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
        "expired": 0,
    }


def test_hourly_outcomes_buckets_by_completion_hour():
    job_in_state("completed")
    failed_job("fail", "x")
    job_in_state("cancelled")  # finished, but neither completed nor failed
    now = timezone.now()
    outcomes = hourly_outcomes(now=now)
    assert len(outcomes.hours) == 24
    assert outcomes.hours[-1] == now.replace(minute=0, second=0, microsecond=0)
    assert (outcomes.completed[-1], outcomes.failed[-1]) == (1, 1)
    assert sum(outcomes.completed) + sum(outcomes.failed) == 2
    assert outcomes.failure_rates[-1] == 50
    # An hour before the window: nothing counted.
    assert sum(hourly_outcomes(now=now + timedelta(hours=25)).completed) == 0


def test_failure_rate_of_an_empty_hour_is_none():
    outcomes = HourlyOutcomes(hours=[timezone.now()] * 3, completed=[0, 3, 1], failed=[0, 1, 0])
    assert outcomes.failure_rates == [None, 25, 0]


def test_top_failing_types_respects_the_window_and_limit():
    failed_job("fail", "a")
    failed_job("sleep", "b")
    assert [f.type for f in top_failing_types(since=timezone.now() - timedelta(hours=1))] == [
        "fail",
        "sleep",
    ]
    assert len(top_failing_types(since=timezone.now() - timedelta(hours=1), limit=1)) == 1
    assert top_failing_types(since=timezone.now() + timedelta(seconds=1)) == []


def test_charts_escape_labels_and_draw_gaps():
    bars = stacked_bar_chart(
        title="<t>",
        labels=["<a>", "b"],
        series=[Series("ok", "c1", [1, 0]), Series("bad", "c2", [2, 0])],
    )
    assert "<t>" not in bars
    assert "&lt;t&gt;" in bars
    assert bars.count("<rect") == 2
    line = line_chart(title="rate", labels=["a", "b", "c", "d"], values=[10, None, 20, 30])
    assert line.count("<polyline") == 2
    assert line.count("<circle") == 3
    autoscaled = line_chart(title="auto", labels=["a"], values=[None])
    assert "<polyline" not in autoscaled
    empty = horizontal_bar_chart(title="none", rows=[])
    assert "<rect" not in empty
    rows = horizontal_bar_chart(title="s", rows=[("a", 0, "c"), ("b", 5, "c")])
    assert 'width="0.0"' in rows
    assert "b: 5" in rows
