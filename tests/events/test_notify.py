"""The doorbell never breaks a writer: with Redis unreachable the notification is dropped."""

import pytest

from job_events import notify
from runner_jobs.models import JobEvent
from tests.factories import job_in_state


@pytest.fixture
def unreachable_redis(settings):
    notify._publisher.cache_clear()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    yield
    notify._publisher.cache_clear()


def test_publishing_without_redis_logs_and_returns(unreachable_redis, caplog):
    notify.job_events_notify(job_ids=["8d6f3f4e-0000-0000-0000-000000000000"])
    assert "Could not publish" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_write_succeeds_while_redis_is_unreachable(unreachable_redis):
    job = job_in_state("completed")
    assert JobEvent.objects.filter(job=job).count() == 4
    assert str(JobEvent.objects.filter(job=job).last()).startswith("job.completed #")
