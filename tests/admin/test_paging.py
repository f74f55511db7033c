"""The changelist paginator: exact counts while they are cheap, PostgreSQL's estimates past that."""

import pytest
from django.db import connection

from runner_jobs import admin_paging
from runner_jobs.admin_paging import (
    EstimatedCountPaginator,
    query_row_estimate,
    table_row_estimate,
)
from runner_jobs.models import RunnerJob
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db


def analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {RunnerJob._meta.db_table}")


@pytest.fixture
def five_jobs():
    workspace = WorkspaceFactory()
    return [job_in_state("queued", workspace=workspace) for _ in range(5)]


def test_small_counts_are_exact(five_jobs):
    assert EstimatedCountPaginator(RunnerJob.objects.all(), 2).count == 5
    assert EstimatedCountPaginator(RunnerJob.objects.filter(status="queued"), 2).count == 5
    assert EstimatedCountPaginator(RunnerJob.objects.filter(status="failed"), 2).count == 0


def test_unfiltered_count_past_the_limit_is_the_table_estimate(five_jobs, monkeypatch):
    monkeypatch.setattr(admin_paging, "EXACT_COUNT_LIMIT", 2)
    analyze()
    assert table_row_estimate(RunnerJob._meta.db_table) == 5
    assert EstimatedCountPaginator(RunnerJob.objects.all(), 2).count == 5


def test_filtered_count_past_the_limit_is_the_planner_estimate(five_jobs, monkeypatch):
    monkeypatch.setattr(admin_paging, "EXACT_COUNT_LIMIT", 2)
    analyze()
    queryset = RunnerJob.objects.filter(status="queued")
    count = EstimatedCountPaginator(queryset, 2).count
    assert count == max(query_row_estimate(queryset), 3)
    assert count >= 3


def test_a_list_is_counted_as_usual():
    assert EstimatedCountPaginator([1, 2, 3], 2).count == 3


def test_a_never_analyzed_table_has_no_estimate():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE never_analyzed (x int)")
    assert table_row_estimate("never_analyzed") == -1
