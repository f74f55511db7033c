"""Retries: 429 (the real quota, ``RUNNER_API_QUOTA``) and 503 are waited out as
``Retry-After`` says, within a bounded total wait; a retried create is still one job."""

import logging
import time

import httpx
import pytest
from runner_jobs_client import Client, RateLimited, RetryPolicy, ServiceUnavailable

from runner_jobs.models import RunnerJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("quota_cleared")]


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "runner_jobs_client"]


def test_over_the_quota_requests_wait_for_retry_after_and_succeed(
    client, settings, caplog, live_asgi, token
):
    caplog.set_level(logging.INFO, logger="runner_jobs_client")
    settings.RUNNER_API_QUOTA = "3/second"
    started = time.monotonic()
    jobs = [client.jobs.create("acme", "agent-task", {"n": n}) for n in range(7)]
    elapsed = time.monotonic() - started
    # 3 per second: at least one request had to wait for the next window (Retry-After: 1).
    assert 1 <= elapsed < 6
    logged = retries_logged(caplog)
    assert len(logged) >= 1
    assert all("429 throttled" in line for line in logged)
    # Every create made exactly one job, although some were sent more than once.
    assert RunnerJob.objects.count() == 7
    assert sorted(job.payload["n"] for job in jobs) == list(range(7))
    assert len({job.id for job in jobs}) == 7


def test_rate_limited_is_raised_when_retry_after_is_past_the_bounded_wait(
    live_asgi, token, settings
):
    # A day's window: a minute's could end between two requests of the test.
    settings.RUNNER_API_QUOTA = "2/day"
    with Client(live_asgi, token, retry=RetryPolicy(max_wait=5)) as client:
        client.jobs.create("acme", "agent-task")
        client.jobs.create("acme", "agent-task")
        started = time.monotonic()
        with pytest.raises(RateLimited) as raised:
            client.jobs.create("acme", "agent-task")
    # Retry-After says wait until the day ends: more than the 5 s we allow, so no waiting.
    assert time.monotonic() - started < 1
    assert raised.value.status == 429
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 86400
    assert RunnerJob.objects.count() == 2


def test_503_is_retried_after_retry_after(proxy, token, caplog):
    caplog.set_level(logging.INFO, logger="runner_jobs_client")
    proxy.unavailable = 2
    with Client(proxy.url, token, retry=RetryPolicy(max_wait=5)) as client:
        started = time.monotonic()
        job = client.jobs.create("acme", "agent-task")
        assert 2 <= time.monotonic() - started < 5  # twice Retry-After: 1
        assert client.jobs.get(job.id).status == "queued"
    assert proxy.refused == 2
    assert len(retries_logged(caplog)) == 2
    assert RunnerJob.objects.count() == 1


def test_503_beyond_the_retries_is_raised(proxy, token):
    proxy.unavailable = 3
    with (
        Client(proxy.url, token, retry=RetryPolicy(max_retries=1)) as client,
        pytest.raises(ServiceUnavailable) as raised,
    ):
        next(client.jobs.list())
    assert (raised.value.code, raised.value.retry_after) == ("unavailable", 1)
    assert proxy.refused == 2


def test_a_lost_answer_is_retried_only_where_repeating_is_safe(proxy, token, client):
    job = client.jobs.create("acme", "agent-task")
    # One connection per request, so each request meets the proxy afresh.
    fresh_connections = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    with (
        fresh_connections,
        Client(
            proxy.url, token, retry=RetryPolicy(backoff=0.05), http_client=fresh_connections
        ) as through_proxy,
    ):
        # A read, and a create (its Idempotency-Key makes a repeat the same job): retried.
        proxy.hang_up += 1
        assert through_proxy.jobs.get(job.id).id == job.id
        proxy.hang_up += 1
        created = through_proxy.jobs.create("acme", "agent-task", {"n": 2})
        # A cancel might have been done before its answer was lost: raised, not repeated.
        proxy.hang_up += 1
        with pytest.raises(httpx.RemoteProtocolError):
            through_proxy.jobs.cancel(created.id)
    assert proxy.hung_up == 3
    assert RunnerJob.objects.count() == 2
    assert client.jobs.get(created.id).status == "queued"
