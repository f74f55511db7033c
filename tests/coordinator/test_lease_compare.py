"""A report's lease token is compared in constant time (``hmac.compare_digest``), so how long a
refusal takes tells a caller nothing about how much of the current token it guessed."""

import hmac
import uuid
from typing import Any

import pytest

from runner_jobs.models import JobStatus
from tests.coordinator.conftest import BASE
from tests.coordinator.test_api import agent_job, claimed, unchanged

pytestmark = pytest.mark.django_db


@pytest.fixture
def comparisons(monkeypatch) -> list[tuple[Any, Any]]:
    """Every ``hmac.compare_digest`` call made while the test runs (each still answered)."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_a_guessed_lease_token_is_refused_after_a_constant_time_comparison(post, comparisons):
    job = agent_job()
    lease = claimed(post)["lease_token"]
    job.refresh_from_db()
    guess = lease[:-4] + "ffff" if not lease.endswith("ffff") else lease[:-4] + "0000"

    response = post(f"jobs/{job.pk}/progress/", {"progress": 50, "lease_token": guess})

    assert response.status_code == 409 and response.json()["code"] == "stale_lease"
    assert comparisons == [(lease.encode(), guess.encode())]
    unchanged(job)


def test_the_right_token_is_accepted(post, comparisons, coordinator):
    job = agent_job()
    lease = claimed(post)["lease_token"]
    hand_back = post(f"jobs/{job.pk}/status/", {"status": "queued", "lease_token": lease})
    assert hand_back.status_code == 200  # under the row lock, checked by lease_check
    assert comparisons and all(pair == (lease.encode(), lease.encode()) for pair in comparisons)
    lease = claimed(post)["lease_token"]
    # A conditional report: the statement's own WHERE lease_token = %s matched (decision 0080).
    response = post(f"jobs/{job.pk}/complete/", {"result": {}, "lease_token": lease})
    assert response.status_code == 200
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert coordinator.get(f"{BASE}/jobs/{job.pk}/").json()["status"] == "completed"


def test_a_report_to_an_ended_job_with_any_token_is_refused(post, comparisons):
    job = agent_job()
    lease = claimed(post)["lease_token"]
    assert post(f"jobs/{job.pk}/complete/", {"result": {}, "lease_token": lease}).status_code == 200
    job.refresh_from_db()
    stale = post(f"jobs/{job.pk}/fail/", {"error": "late", "lease_token": str(uuid.uuid4())})
    assert stale.status_code == 409 and stale.json()["code"] == "stale_lease"
    assert comparisons[-1][0] == b""  # the ended job holds no lease
    unchanged(job)
