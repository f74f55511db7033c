"""The events of one job, ordered by time, are read through the (job, timestamp) index."""

import json

import pytest
from django.db import connection

from runner_jobs.models import JobEvent
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

EVENT_COUNT = 60_000
JOB_COUNT = 300


def test_events_of_one_job_use_the_composite_index():
    ws = WorkspaceFactory()
    jobs = [job_in_state("pending", workspace=ws) for _ in range(JOB_COUNT)]
    per_job = EVENT_COUNT // JOB_COUNT
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO job_events_jobevent (job_id, type, actor, payload, timestamp)
            SELECT j.id, 'bulk.event', 'system', '{}'::jsonb, now() - (g * interval '1 second')
            FROM unnest(%s::uuid[]) AS j(id), generate_series(1, %s) AS g
            """,
            [[job.pk for job in jobs], per_job],
        )
        cursor.execute("ANALYZE job_events_jobevent")
    assert JobEvent.objects.count() >= 50_000
    queryset = JobEvent.objects.filter(job=jobs[17]).order_by("timestamp", "id")
    plan = json.loads(queryset.explain(format="json"))
    text = json.dumps(plan)
    assert "job_event_job_ts_idx" in text, text
    assert '"Seq Scan"' not in text
