"""The fault scenarios. Each returns (passed, figures) and leaves the stack running."""

import signal
import threading
import time
from collections import Counter
from typing import Any

import requests

from chaos.stack import LEASE_SECONDS, SWEEP_SECONDS, Stack, wait_until

Result = tuple[bool, dict[str, Any]]

# Upper bounds only (the figures report the real times): on a loaded 2-core machine a new
# prefork worker alone can take 15 s to start, so recoveries get generous room.
RECOVERY_SLACK_SECONDS = 120


def _created_ids(responses: list[requests.Response]) -> list[str]:
    return [r.json()["id"] for r in responses if r.status_code == 201]


def _completed_once(stack: Stack, ids: list[str]) -> int:
    rows = stack.pg.query(
        "SELECT count(*) FROM job_events_jobevent WHERE job_id = ANY(%s::uuid[]) "
        "AND type = 'job.completed'",
        [ids],
    )
    return int(rows[0][0])


def worker_sigkill(stack: Stack) -> Result:
    """SIGKILL the worker while 50 jobs run; a new worker and the sweeper finish every one."""
    stack.start_worker("kill-me", concurrency=50, pool="threads")
    ids = _created_ids([stack.create_job("sleep", {"seconds": 8, "steps": 8}) for _ in range(50)])
    running = wait_until(lambda: stack.statuses(ids).get("running", 0) == 50, 30)
    running_at_kill = stack.statuses(ids).get("running", 0)
    stack.kill("kill-me", signal.SIGKILL)
    killed_at = time.monotonic()
    stack.start_worker("after-kill", concurrency=50, pool="threads")
    took = stack.wait_terminal(ids, timeout=LEASE_SECONDS * 4 + RECOVERY_SLACK_SECONDS)
    counts = stack.statuses(ids)
    completions = _completed_once(stack, ids)
    stack.kill("after-kill", signal.SIGKILL)
    figures = {
        "jobs": len(ids),
        "running when killed": running_at_kill,
        "recovered in s": round(took, 1) if took is not None else None,
        "since kill s": round(time.monotonic() - killed_at, 1),
        "statuses": counts,
        "job.completed events": completions,
    }
    passed = (
        len(ids) == 50
        and running
        and took is not None
        and counts.get("completed", 0) == 50
        and completions == 50
    )
    return passed, figures


def redis_down_creates(stack: Stack) -> Result:
    """Redis stopped during 100 creates: all 201, committed queued with their messages unsent
    (marked overdue for the sweeper); Redis back: all complete."""
    stack.start_worker("redis-worker", concurrency=4)
    stack.redis.stop()
    started = time.monotonic()
    responses = [stack.create_job("echo", {"n": n}) for n in range(100)]
    create_seconds = time.monotonic() - started
    codes = Counter(r.status_code for r in responses)
    ids = _created_ids(responses)
    waiting = stack.statuses(ids).get("queued", 0)
    stack.redis.start()
    took = stack.wait_terminal(ids, timeout=SWEEP_SECONDS * 10 + RECOVERY_SLACK_SECONDS)
    counts = stack.statuses(ids)
    stack.kill("redis-worker", signal.SIGKILL)
    figures = {
        "status codes": dict(codes),
        "create s (100, broker down)": round(create_seconds, 1),
        "queued while down": waiting,
        "drained after restart s": round(took, 1) if took is not None else None,
        "statuses": counts,
    }
    passed = codes == {201: 100} and waiting == 100 and counts.get("completed", 0) == 100
    return passed, figures


def postgres_restart(stack: Stack) -> Result:
    """Restart PostgreSQL under a create load: only 201 or 503 while it is down (never a 500
    or a hang), every request 201 shortly after it is back, with no process restarted."""
    stack.start_worker("pg-worker", concurrency=4)
    stop = threading.Event()
    outcomes: list[tuple[float, float, Any]] = []  # (sent at, seconds, status or error)
    lock = threading.Lock()

    def load() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                code: Any = stack.create_job("echo", {"load": True}).status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            with lock:
                outcomes.append((began, time.monotonic() - began, code))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    down_at = time.monotonic()
    stack.pg.stop()
    time.sleep(3)
    stack.pg.start()
    up_at = time.monotonic()
    time.sleep(7)
    stop.set()
    for t in threads:
        t.join()
    during = Counter(code for sent, _, code in outcomes if down_at <= sent < up_at)
    settled = Counter(code for sent, _, code in outcomes if sent >= up_at + 4)
    ids = [
        row[0]
        for row in stack.pg.query(
            "SELECT id::text FROM runner_jobs_runnerjob WHERE payload ? 'load'"
        )
    ]
    took = stack.wait_terminal(ids, timeout=RECOVERY_SLACK_SECONDS)
    stack.kill("pg-worker", signal.SIGKILL)
    figures = {
        "codes while down": dict(during),
        "codes 4 s after restart": dict(settled),
        "slowest request s": round(max((d for _, d, _ in outcomes), default=0), 2),
        "jobs created under load": len(ids),
        "all created jobs done s": round(took, 1) if took is not None else None,
    }
    passed = (
        during.get(503, 0) > 0
        and set(during) <= {201, 503}
        and set(settled) == {201}
        and took is not None
    )
    return passed, figures


def poison_job(stack: Stack) -> Result:
    """A job that kills its worker process on every attempt ends failed after max_attempts."""
    stack.start_worker("poison-worker", concurrency=2)
    response = stack.create_job("poison", {})
    job_id = response.json()["id"]
    took = stack.wait_terminal([job_id], timeout=LEASE_SECONDS * 3 * 3 + RECOVERY_SLACK_SECONDS)
    status, attempts, max_attempts, error = stack.pg.query(
        "SELECT status, attempts, max_attempts, error FROM runner_jobs_runnerjob WHERE id = %s",
        [job_id],
    )[0]
    stack.kill("poison-worker", signal.SIGKILL)
    figures = {
        "status": status,
        "attempts": f"{attempts}/{max_attempts}",
        "error": error,
        "ended after s": round(took, 1) if took is not None else None,
    }
    passed = status == "failed" and attempts == max_attempts and "lost" in error.lower()
    return passed, figures


def stalled_worker(stack: Stack) -> Result:
    """A worker frozen past its lease: the job goes to another worker; the stalled worker's
    late reports are refused (stale lease), so the job completes exactly once."""
    stack.start_worker("stall-me", concurrency=1)
    job_id = stack.create_job("sleep", {"seconds": 3, "steps": 3}).json()["id"]
    assert wait_until(lambda: stack.statuses([job_id]).get("running") == 1, 30)
    stack.kill("stall-me", signal.SIGSTOP)
    stalled_at = time.monotonic()
    stack.start_worker("rescuer", concurrency=1)
    took = stack.wait_terminal([job_id], timeout=LEASE_SECONDS * 3 + RECOVERY_SLACK_SECONDS)
    stack.kill("stall-me", signal.SIGCONT)
    time.sleep(4)  # the stalled attempt wakes up and tries to report
    status, attempts = stack.pg.query(
        "SELECT status, attempts FROM runner_jobs_runnerjob WHERE id = %s", [job_id]
    )[0]
    owners = stack.pg.query(
        "SELECT payload->>'worker' FROM job_events_jobevent WHERE job_id = %s "
        "AND type = 'job.started' ORDER BY id",
        [job_id],
    )
    completions = _completed_once(stack, [job_id])
    stack.kill("stall-me", signal.SIGKILL)
    stack.kill("rescuer", signal.SIGKILL)
    figures = {
        "status": status,
        "attempts": attempts,
        "started by": [o[0] for o in owners],
        "job.completed events": completions,
        "rescued after s": round(took, 1) if took is not None else None,
        "since stall s": round(time.monotonic() - stalled_at, 1),
    }
    passed = status == "completed" and attempts == 2 and completions == 1
    return passed, figures


def keyed_slots_sigkill(stack: Stack) -> Result:
    """SIGKILL the worker holding both slots of a concurrency key (limit 2): the slots come back
    within a lease plus a sweep, never more than 2 of the key run at once, all 6 complete."""
    key = {"concurrency_key": "acct-42", "concurrency_limit": 2}
    stack.start_worker("slot-holder", concurrency=4)
    ids = _created_ids([stack.create_job("sleep", {"seconds": 3}, **key) for _ in range(6)])
    held = wait_until(lambda: stack.statuses(ids).get("running", 0) == 2, 30)
    stack.kill("slot-holder", signal.SIGKILL)
    killed_at = time.monotonic()
    stack.start_worker("after-slots", concurrency=4)
    most, back_after = 0, None
    deadline = killed_at + LEASE_SECONDS * 4 + RECOVERY_SLACK_SECONDS
    while time.monotonic() < deadline:
        rows = stack.pg.query(
            "SELECT count(*) FILTER (WHERE status = 'running'), "
            "count(*) FILTER (WHERE status = 'running' AND attempts = 2), "
            "count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) "
            "FROM runner_jobs_runnerjob WHERE id = ANY(%s::uuid[])",
            [ids],
        )
        running, second_attempts, ended = (int(v) for v in rows[0])
        most = max(most, running)
        if back_after is None and (second_attempts or ended):
            back_after = time.monotonic() - killed_at
        if ended == len(ids):
            break
        time.sleep(0.2)
    counts = stack.statuses(ids)
    completions = _completed_once(stack, ids)
    stack.kill("after-slots", signal.SIGKILL)
    figures = {
        "jobs": len(ids),
        "slots held when killed": 2 if held else stack.statuses(ids).get("running", 0),
        "slots back after s": round(back_after, 1) if back_after is not None else None,
        "bound s": LEASE_SECONDS + SWEEP_SECONDS,
        "most running at once": most,
        "statuses": counts,
        "job.completed events": completions,
    }
    passed = (
        len(ids) == 6
        and held
        and back_after is not None
        and back_after <= LEASE_SECONDS + SWEEP_SECONDS + RECOVERY_SLACK_SECONDS
        and most <= 2
        and counts.get("completed", 0) == 6
        and completions == 6
    )
    return passed, figures


SCENARIOS = {
    "worker SIGKILL during 50 running jobs": worker_sigkill,
    "Redis stopped during 100 creates": redis_down_creates,
    "PostgreSQL restarted under load": postgres_restart,
    "poison job kills its worker every attempt": poison_job,
    "worker stalled past its lease": stalled_worker,
    "worker SIGKILL holding a key's concurrency slots": keyed_slots_sigkill,
}
