"""``python -m bench.cpu RESULT.json``: CPU time and SQL statements of one operation at a time.

Run by the ``cpu`` scenario in a process of its own with the bench stack's environment: its
production settings (``bench.settings``), its database and its broker, while no worker and no
beat run. Every operation goes through the code a request or a worker runs, not around it:

- the API through Django's test client (the whole middleware stack, the URL, the view, the real
  authentication with the stack's token or coordinator key);
- the worker by taking the broker messages a create published and running the task each one
  names in this process (``Task.apply``), from message to the job's ``completed``.

So the measurement keeps working however the code under those entry points changes.

CPU is ``time.process_time()`` of this process (not PostgreSQL's, nor Redis'), per operation, the
median of ``ROUNDS`` rounds of ``OPS_PER_ROUND`` operations; what an operation needs first (a
running job, a winner) is made before its round and not counted. Statements are those of one
more operation after each round, captured with ``CaptureQueriesContext`` (which also records
BEGIN, COMMIT and savepoints) and not timed, since capturing costs CPU of its own.

``BENCH_PROFILE=DIR`` (optional) also profiles each operation's CPU with cProfile, in extra rounds
after the timed ones so the profiler's own cost stays out of the figures, and writes
``DIR/<operation>.prof`` (read with ``python -m pstats``, or snakeviz).
"""

import base64
import cProfile
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import django
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

if TYPE_CHECKING:
    # What the test client returns (django-stubs' name for it): a response with ``json()``.
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

ROUNDS = 5
OPS_PER_ROUND = 10
WARMUP = 3
WORKSPACE = "bench"
JOBS = "/api/v1/runner-jobs/"
COORDINATOR_JOBS = "/api/v1/coordinator/jobs/"
SQL_SHOWN = 160  # characters of each statement kept in the figures, to see what they are

_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM)\b", re.IGNORECASE)
_LITERAL = re.compile(r"'(?:[^']|'')*'")  # a string value, whose words are no SQL


def transactions(statements: list[str]) -> int:
    """How many transactions ``statements`` ran: each explicit BEGIN … COMMIT/ROLLBACK block,
    plus each statement that writes on its own in autocommit (one statement, one transaction).
    Reads in autocommit are not counted."""
    count, inside = 0, False
    for sql in statements:
        word = sql.split(None, 1)[0].upper() if sql.strip() else ""
        if word == "BEGIN":
            count, inside = count + 1, True
        elif word in {"COMMIT", "ROLLBACK"}:
            inside = False
        elif (
            not inside
            and word in {"INSERT", "UPDATE", "DELETE", "WITH"}
            and _WRITE.search(_LITERAL.sub("''", sql))
        ):
            count += 1
    return count


def task_call(message: dict[str, Any]) -> tuple[str, list[Any], dict[str, Any], str]:
    """(task name, args, kwargs, task id) of a Celery message (protocol 2) as kombu stores it in
    a Redis list."""
    body: str | bytes = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    headers = message["headers"]
    return headers["task"], args, kwargs, headers["id"]


@dataclass
class Operation:
    """``run`` is measured; ``setup`` makes its argument beforehand, ``before`` clears the way
    for a batch of setups, ``check`` verifies the outcome afterwards (none of them counted)."""

    name: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    check: Callable[[Any, Any], None] = lambda _arg, _result: None
    before: Callable[[], None] = lambda: None


@dataclass
class Figures:
    cpu_ms: list[float] = field(default_factory=list)
    statements: list[list[str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        counts = [len(s) for s in self.statements]
        return {
            "cpu ms": round(statistics.median(self.cpu_ms), 2),
            "statements": statistics.median(counts),
            "transactions": statistics.median([transactions(s) for s in self.statements]),
            "cpu ms per round": [round(v, 2) for v in self.cpu_ms],
            "statements per round": counts,
            "sql": [s[:SQL_SHOWN] for s in self.statements[-1]],
        }


def measure(
    operation: Operation,
    rounds: int = ROUNDS,
    per_round: int = OPS_PER_ROUND,
    warmup: int = WARMUP,
) -> Figures:
    """``rounds`` timed rounds of ``per_round`` runs, each followed by one captured run, after
    ``warmup`` runs that count for nothing (first requests import and cache)."""

    def once(arg: Any) -> None:
        operation.check(arg, operation.run(arg))

    for _ in range(warmup):
        operation.before()
        once(operation.setup())
    figures = Figures()
    for _ in range(rounds):
        operation.before()
        args = [operation.setup() for _ in range(per_round)]
        results = []
        began = time.process_time()
        for arg in args:
            results.append(operation.run(arg))
        figures.cpu_ms.append((time.process_time() - began) * 1000 / per_round)
        for arg, result in zip(args, results, strict=True):
            operation.check(arg, result)
        operation.before()
        arg = operation.setup()
        with CaptureQueriesContext(connection) as captured:
            result = operation.run(arg)
        operation.check(arg, result)
        figures.statements.append([q["sql"] for q in captured.captured_queries])
    if profile_dir := os.environ.get("BENCH_PROFILE"):
        profile(operation, Path(profile_dir), rounds * per_round)
    return figures


def profile(operation: Operation, directory: Path, runs: int) -> None:
    """``runs`` more runs of the operation under cProfile, to ``directory/<name>.prof``."""
    operation.before()
    args = [operation.setup() for _ in range(runs)]
    profiler = cProfile.Profile(time.process_time)  # CPU, as the figures: no waiting counted
    profiler.enable()
    for arg in args:
        operation.run(arg)
    profiler.disable()
    directory.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(directory / f"{operation.name.replace(' ', '-')}.prof")


def expect(status: int) -> Callable[[Any, "Response"], None]:
    def check(_arg: Any, response: "Response") -> None:
        assert response.status_code == status, (response.status_code, response.content[:300])

    return check


class Operations:
    """The operations, with the stack's consumer token and coordinator key."""

    def __init__(self, token: str, coordinator_key: str) -> None:
        from config.celery import app as celery_app  # after django.setup()

        self.celery = celery_app
        # The task modules a worker imports at start (autodiscovered and CELERY_IMPORTS).
        celery_app.loader.import_default_modules()
        self.client = Client(HTTP_HOST="127.0.0.1")
        self.consumer = {"Authorization": f"Token {token}"}
        self.coordinator = {"X-API-Key": coordinator_key}
        self.broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> "Response":
        return self.client.post(
            path, json.dumps(body), content_type="application/json", headers=headers
        )

    # --- the broker ----------------------------------------------------------------------

    def broker_messages(self) -> list[dict[str, Any]]:
        """Take every message off the broker's queues (each priority's list), oldest first."""
        messages = []
        for queue in self.celery.amqp.queues.values():
            for key in self.broker.scan_iter(match=f"{queue.name}*"):
                if self.broker.type(key) != b"list":
                    continue
                while (raw := self.broker.rpop(key)) is not None:
                    messages.append(json.loads(raw))  # type: ignore[arg-type]
        return messages

    def run_messages(self, messages: list[dict[str, Any]]) -> None:
        """What a worker does with the messages: run the task each names, here."""
        for message in messages:
            name, args, kwargs, task_id = task_call(message)
            self.celery.tasks[name].apply(
                args=tuple(args), kwargs=kwargs, task_id=task_id, throw=True
            )

    # --- what the operations need --------------------------------------------------------

    def create(self, job_type: str = "echo") -> str:
        body = {"workspace": WORKSPACE, "type": job_type, "payload": {"n": 1}}
        response = self.post(JOBS, body, self.consumer)
        expect(201)(None, response)
        return str(response.json()["id"])

    def published_job(self) -> tuple[str, list[dict[str, Any]]]:
        """A new echo job created through the API, and the broker messages its create sent."""
        job_id = self.create()
        return job_id, self.broker_messages()

    def discard_unrun(self) -> None:
        """The messages and jobs earlier operations left (the creates'): off the broker, and
        marked cancelled in the database (throwaway rows, no event). Before a round of worker
        runs, so that a worker that takes its work from the database rather than from the
        message runs the round's jobs, and they alone."""
        from runner_jobs.models import RunnerJob  # after django.setup()

        self.broker_messages()
        RunnerJob.objects.filter(
            workspace__slug=WORKSPACE, status__in=["pending", "queued"]
        ).update(status="cancelled")

    def running_job(self) -> tuple[str, str]:
        """A coordinator's job, running under a lease: (id, lease token)."""
        body = {"workspace": WORKSPACE, "type": "agent-task", "payload": {}}
        created = self.post(COORDINATOR_JOBS, body, self.coordinator)
        expect(201)(None, created)
        job_id = str(created.json()["id"])
        started = self.report(job_id, "status", {"status": "running"}, "")
        expect(200)(None, started)
        return job_id, str(started.json()["lease_token"])

    def report(self, job_id: str, kind: str, body: dict[str, Any], lease: str) -> "Response":
        if lease:
            body = {**body, "lease_token": lease}
        return self.post(f"{COORDINATOR_JOBS}{job_id}/{kind}/", body, self.coordinator)

    def completed_job(self) -> tuple[str, str]:
        """A coordinator's job another report already completed: what a losing report finds."""
        job_id, lease = self.running_job()
        expect(200)(None, self.report(job_id, "complete", {"result": {"winner": True}}, lease))
        return job_id, lease

    def job_status(self, job_id: str) -> str:
        from runner_jobs.models import RunnerJob  # after django.setup()

        return str(RunnerJob.objects.values_list("status", flat=True).get(pk=job_id))

    def check_completed(self, arg: tuple[str, list[Any]], _result: Any) -> None:
        job_id, messages = arg
        status = self.job_status(job_id)
        assert status == "completed", f"job {job_id} is {status} after {len(messages)} messages"

    # --- the operations ------------------------------------------------------------------

    def all(self) -> list[Operation]:
        return [
            Operation("healthz", lambda _: self.client.get("/healthz"), check=expect(200)),
            Operation(
                "create",
                lambda _: self.post(
                    JOBS,
                    {"workspace": WORKSPACE, "type": "echo", "payload": {"n": 1}},
                    self.consumer,
                ),
                check=expect(201),
            ),
            Operation(
                "worker echo job",
                lambda arg: self.run_messages(arg[1]),
                setup=self.published_job,
                check=self.check_completed,
                before=self.discard_unrun,
            ),
            Operation(
                "progress report",
                lambda arg: self.report(arg[0], "progress", {"progress": 50}, arg[1]),
                setup=self.running_job,
                check=expect(200),
            ),
            Operation(
                "event report",
                lambda arg: self.report(
                    arg[0], "events", {"type": "bench.ping", "payload": {"n": 1}}, arg[1]
                ),
                setup=self.running_job,
                check=expect(201),
            ),
            Operation(
                "losing terminal report",
                lambda arg: self.report(arg[0], "complete", {"result": {"loser": True}}, arg[1]),
                setup=self.completed_job,
                check=expect(409),
            ),
        ]


def main(result_path: str) -> None:
    django.setup()
    operations = Operations(os.environ["BENCH_TOKEN"], os.environ["BENCH_COORDINATOR_KEY"])
    report: dict[str, Any] = {"rounds": ROUNDS, "operations per round": OPS_PER_ROUND}
    for operation in operations.all():
        report[operation.name] = measure(operation).summary()
    operations.discard_unrun()  # the creates' jobs: no worker will run those
    Path(result_path).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
