"""The built-in job types' handlers (registered in ``runner_jobs.registry``). A handler takes the
job and its ``JobContext`` and returns the job's result (JSON)."""

from typing import Any

from runner_jobs.execution import JobContext, JobError, TransientJobError
from runner_jobs.models import RunnerJob


def echo(job: RunnerJob, ctx: JobContext) -> Any:
    """Completes with ``result`` = ``payload``."""
    return job.payload


def sleep(job: RunnerJob, ctx: JobContext) -> dict[str, Any]:
    """``{"seconds": s, "steps": n}``: n steps over s seconds, reporting progress after each;
    stops within a fraction of a second once cancelled."""
    seconds = float(job.payload.get("seconds", 1))
    steps = max(1, int(job.payload.get("steps", 1)))
    for number in range(1, steps + 1):
        with ctx.step(f"sleep {number}/{steps}", "execution"):
            ctx.sleep(seconds / steps)
        ctx.progress(number * 100 // steps, message=f"step {number} of {steps} done")
    return {"slept": seconds, "steps": steps}


def fail(job: RunnerJob, ctx: JobContext) -> None:
    """Fails at once, without retries, with ``payload["message"]`` as the error."""
    raise JobError(str(job.payload.get("message", "Failed on purpose.")))


def flaky(job: RunnerJob, ctx: JobContext) -> dict[str, Any]:
    """``{"failures": k}``: a transient error on each of the first k attempts, then completes."""
    failures = int(job.payload.get("failures", 1))
    if job.attempts <= failures:
        raise TransientJobError(f"Transient failure {job.attempts} of {failures}.")
    return {"attempts": job.attempts, "failures": failures}
