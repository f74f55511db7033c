"""The invariants every scenario ends with, checked in SQL against the stack's database."""

from typing import Any

from chaos.stack import LEASE_SECONDS, Stack
from runner_jobs.events import TERMINAL_EVENT_TYPES

TERMINAL_EVENTS = tuple(sorted(str(t) for t in TERMINAL_EVENT_TYPES))

CHECKS: dict[str, str] = {
    # Nothing is stuck: a live job older than its lease (plus a sweep) means the system lost it.
    "no live job older than its lease": f"""
        SELECT id FROM runner_jobs_runnerjob
        WHERE status IN ('pending', 'queued', 'running')
          AND COALESCE(lease_expires_at, due_at, created_at)
              < now() - interval '{LEASE_SECONDS * 2} seconds'
    """,
    "at most one terminal event per job": f"""
        SELECT job_id FROM job_events_jobevent WHERE type IN {TERMINAL_EVENTS!r}
        GROUP BY job_id HAVING count(*) > 1
    """,
    "attempts <= max_attempts": """
        SELECT id FROM runner_jobs_runnerjob WHERE attempts > max_attempts
    """,
    # Every write bumps the version once and writes one event (docs/decisions/0001-locking.md).
    "version equals the number of events": """
        SELECT j.id FROM runner_jobs_runnerjob j
        LEFT JOIN (SELECT job_id, count(*) AS n FROM job_events_jobevent GROUP BY job_id) e
               ON e.job_id = j.id
        WHERE j.version <> COALESCE(e.n, 0)
    """,
    "terminal jobs have their terminal event": f"""
        SELECT j.id FROM runner_jobs_runnerjob j
        WHERE j.status IN ('completed', 'failed', 'cancelled')
          AND NOT EXISTS (SELECT 1 FROM job_events_jobevent e
                          WHERE e.job_id = j.id AND e.type IN {TERMINAL_EVENTS!r})
    """,
}


def check_invariants(stack: Stack) -> dict[str, Any]:
    """Name of each broken invariant -> offending ids (first few); empty when all hold."""
    broken: dict[str, Any] = {}
    for name, sql in CHECKS.items():
        rows = stack.pg.query(sql)
        if rows:
            broken[name] = [str(r[0]) for r in rows[:5]] + (
                [f"... {len(rows)} in all"] if len(rows) > 5 else []
            )
    return broken
