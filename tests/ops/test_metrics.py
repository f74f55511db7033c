"""/metrics after a known sequence of jobs, each value exact."""

import json
import uuid

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from config.redis_client import redis_client
from runner_jobs import metrics, services
from runner_jobs.models import RunnerJob
from runner_jobs.services import locking
from runner_jobs.services.jobs import job_recover_lost
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("metrics_reset")]


def scrape(client, **headers) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def known_sequence() -> None:
    """Four jobs of two types through every kind of counted change."""
    ws = WorkspaceFactory()

    def agent_task() -> RunnerJob:
        return services.job_create(
            workspace=ws, spec=services.JobSpec(type="agent-task", payload={}), actor="t"
        ).job

    done, lost, cancelled = agent_task(), agent_task(), agent_task()
    # An echo job is dispatched after its commit: pending -> queued on the (real) broker.
    services.job_create(workspace=ws, spec=services.JobSpec(type="echo", payload={}), actor="t")

    started = services.job_start(job_id=done.pk, actor="w", worker="w1")
    services.job_complete(job_id=done.pk, result={}, actor="w", lease_token=started.lease_token)

    with override_settings(RUNNER_JOB_LEASE_SECONDS=0):
        services.job_start(job_id=lost.pk, actor="w", worker="w2")
    with pytest.raises(services.StaleLeaseError):
        services.job_progress_update(
            job_id=lost.pk, progress=5, actor="w", lease_token=uuid.uuid4()
        )
    job_recover_lost(job_id=lost.pk)

    services.job_cancel(job_id=cancelled.pk, actor="u")

    def always_conflicting(job: RunnerJob) -> locking.Change:
        RunnerJob.objects.filter(pk=job.pk).update(version=job.version + 1)
        return locking.Change("test.touch", {})

    with pytest.raises(services.ConcurrentUpdateError):
        locking.job_update_optimistic(job_id=cancelled.pk, plan=always_conflicting, actor="t")

    metrics.sweep_observed(dispatched=2, redispatched=0)
    metrics.webhook_delivery_observed(succeeded=False, will_retry=True)
    metrics.webhook_delivery_observed(succeeded=True, will_retry=False)
    metrics.webhook_delivery_observed(succeeded=False, will_retry=False)


def test_metrics_after_a_known_sequence(client):
    known_sequence()
    values = scrape(client)

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert value("runner_jobs_database_up") == 1
    transitions = {
        labels[0][1]: v
        for (name, labels), v in values.items()
        if name == "runner_jobs_transitions_total"
    }
    assert transitions == {
        "job.created": 4,
        # three agent-tasks at creation, the echo job's dispatch, the lost job's recovery
        "job.queued": 5,
        "job.started": 2,
        "job.completed": 1,
        "job.cancelled": 1,
    }
    assert value("runner_jobs_optimistic_lock_conflicts_total") == 3
    assert value("runner_jobs_optimistic_lock_retries_total") == 2
    assert value("runner_jobs_stale_lease_refusals_total") == 1
    recoveries = {
        dict(labels)["outcome"]: v
        for (name, labels), v in values.items()
        if name == "runner_jobs_sweeper_recoveries_total"
    }
    assert recoveries == {"requeued": 1, "dispatched": 2}
    assert value("runner_jobs_webhook_deliveries_total", outcome="delivered") == 1
    assert value("runner_jobs_webhook_deliveries_total", outcome="failed") == 1
    assert value("runner_jobs_webhook_deliveries_total", outcome="gave_up") == 1

    jobs = {
        dict(labels)["type"] + "/" + dict(labels)["status"]: v
        for (name, labels), v in values.items()
        if name == "runner_jobs_jobs" and v
    }
    assert jobs == {
        "agent-task/queued": 1,
        "agent-task/completed": 1,
        "agent-task/cancelled": 1,
        "echo/queued": 1,
    }
    # Every registered type is there, with zeros, so alerts see a series.
    assert value("runner_jobs_jobs", status="running", type="sleep") == 0
    assert 0 <= value("runner_jobs_oldest_queued_job_age_seconds", type="agent-task") < 30
    assert value("runner_jobs_oldest_queued_job_age_seconds", type="fail") == 0
    # django-prometheus's request and database metrics are there too.
    assert any(name == "django_http_requests_total_by_method_total" for name, _ in values)
    assert any(name == "django_db_execute_total" for name, _ in values)


def test_terminal_counts_are_cached_between_scrapes(client, django_assert_max_num_queries):
    scrape(client)
    services.job_cancel(
        job_id=services.job_create(
            workspace=WorkspaceFactory(),
            spec=services.JobSpec(type="agent-task", payload={}),
            actor="t",
        ).job.pk,
        actor="u",
    )
    # The live counts and the workers table (a handful of rows); not the terminal GROUP BY.
    with django_assert_max_num_queries(2):
        values = scrape(client)
    key = ("runner_jobs_jobs", (("status", "cancelled"), ("type", "agent-task")))
    assert values[key] == 0
    metrics.cache.delete(metrics.TERMINAL_COUNTS_CACHE_KEY)
    assert scrape(client)[key] == 1


def test_counters_survive_redis_outage_without_failing_writes(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:6397/0"  # nothing listens there
    job = services.job_create(
        workspace=WorkspaceFactory(),
        spec=services.JobSpec(type="agent-task", payload={}),
        actor="t",
    )
    assert job.created
    values = scrape(client)
    assert not any(name == "runner_jobs_transitions_total" for name, _ in values)
    assert values[("runner_jobs_jobs", (("status", "queued"), ("type", "agent-task")))] == 1


@override_settings(METRICS_TOKEN="s3cret", METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"])
def test_metrics_restricted_by_token_or_network(client):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="not-an-address").status_code == 403
    body = client.get("/metrics").json()
    assert body == {"detail": "Not allowed to read metrics.", "code": "permission_denied"}


def test_counter_labels_are_checked():
    with pytest.raises(ValueError):
        metrics.counter_inc(metrics.TRANSITIONS)


def test_reports_are_not_transitions_and_unknown_counters_are_ignored(client):
    job = services.job_create(
        workspace=WorkspaceFactory(),
        spec=services.JobSpec(type="agent-task", payload={}),
        actor="t",
    )
    services.event_append(job_id=job.job.pk, type="agent.note", actor="c", payload={})
    # A counter an older release wrote, no longer declared.
    redis_client().hincrby(metrics.COUNTERS_KEY, json.dumps(["runner_jobs_retired", "x"]), 1)
    values = scrape(client)
    transitions = {
        dict(labels)["event"]: v
        for (name, labels), v in values.items()
        if name == "runner_jobs_transitions_total"
    }
    assert transitions == {"job.created": 1, "job.queued": 1}
    assert not any("retired" in name for name, _ in values)


@override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=["127.0.0.0/8"])
def test_metrics_restricted_by_network_alone(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 403


def test_the_sweeper_counts_the_jobs_it_expired_and_timed_out(client):
    ws = WorkspaceFactory()
    for fields in ({"ttl_seconds": 5}, {"timeout_seconds": 5}):
        services.job_create(
            workspace=ws, spec=services.JobSpec(type="agent-task", payload={}, **fields), actor="t"
        )
    RunnerJob.objects.filter(ttl_seconds=5).update(expires_at="2020-01-01T00:00:00Z")
    (claimed,) = services.job_claim(types=["agent-task"], worker="c", limit=5, actor="c")
    RunnerJob.objects.filter(pk=claimed.pk).update(started_at="2020-01-01T00:00:00Z")
    report = services.jobs_sweep()
    assert (report.expired, report.timed_out) == (1, 1)
    recoveries = {
        dict(labels)["outcome"]: v
        for (name, labels), v in scrape(client).items()
        if name == "runner_jobs_sweeper_recoveries_total"
    }
    assert recoveries == {"expired": 1, "timed_out": 1}


def test_queued_and_running_jobs_per_workspace_and_type(client, monkeypatch):
    """Only pairs with live jobs, both statuses; past WORKSPACE_SERIES_MAX workspaces, the
    quieter ones are summed as "(other)"."""
    big, small, tiny = (WorkspaceFactory(slug=slug) for slug in ("big", "small", "tiny"))
    for workspace, type_, status, n in [
        (big, "echo", "queued", 3),
        (big, "echo", "running", 1),
        (big, "agent-task", "queued", 1),
        (small, "echo", "running", 2),
        (tiny, "echo", "queued", 1),
        (tiny, "echo", "completed", 4),
    ]:
        for _ in range(n):
            job_in_state(status, workspace=workspace, type=type_)

    def series(values) -> dict[tuple[str, str, str], float]:
        return {
            (labels["workspace"], labels["type"], labels["status"]): v
            for (name, pairs), v in values.items()
            if name == "runner_jobs_workspace_jobs"
            for labels in [dict(pairs)]
        }

    assert series(scrape(client)) == {
        ("big", "echo", "queued"): 3,
        ("big", "echo", "running"): 1,
        ("big", "agent-task", "queued"): 1,
        ("big", "agent-task", "running"): 0,
        ("small", "echo", "queued"): 0,
        ("small", "echo", "running"): 2,
        ("tiny", "echo", "queued"): 1,
        ("tiny", "echo", "running"): 0,
    }
    monkeypatch.setattr(metrics, "WORKSPACE_SERIES_MAX", 1)
    assert series(scrape(client)) == {
        ("big", "echo", "queued"): 3,
        ("big", "echo", "running"): 1,
        ("big", "agent-task", "queued"): 1,
        ("big", "agent-task", "running"): 0,
        ("(other)", "echo", "queued"): 1,
        ("(other)", "echo", "running"): 2,
    }
