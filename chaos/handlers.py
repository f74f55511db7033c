"""Job handlers that only the chaos suite registers (through RUNNER_JOB_TYPES)."""

import os
import signal
from typing import Any

from runner_jobs.execution import JobContext
from runner_jobs.models import RunnerJob


def poison(job: RunnerJob, ctx: JobContext) -> Any:
    """Kills the process running it, on every attempt: a poison message."""
    os.kill(os.getpid(), signal.SIGKILL)
