"""Real Celery worker processes against the real Redis and the test database.

Each worker is a ``celery -A config worker`` subprocess in its own process group (so a test can
SIGKILL the whole of it), with short leases, sweeps and backoffs so recovery happens in seconds.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from chaos.servers import ThrowawayRedis, free_port
from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
WORKER_READY_TIMEOUT = 30
TEST_LEASE_SECONDS = 5
TEST_SWEEP_INTERVAL_SECONDS = 1
# Small values, so a lost worker's job is recovered and retried within seconds.
WORKER_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.test",
    "RUNNER_JOB_LEASE_SECONDS": str(TEST_LEASE_SECONDS),
    "RUNNER_SWEEP_INTERVAL_SECONDS": str(TEST_SWEEP_INTERVAL_SECONDS),
    "RUNNER_REDISPATCH_AFTER_SECONDS": "15",
    "RUNNER_RETRY_BACKOFF_SECONDS": "1",
    "RUNNER_JOB_TIME_LIMIT_SECONDS": "60",
}
# A test's worker serves jobs and webhook deliveries alike, unless the test splits them as the
# Procfile does.
WORKER_QUEUES = f"celery,{settings.WEBHOOK_QUEUE}"


def database_url() -> str:
    """The URL of the database this test run uses (the test database, not the real one)."""
    db = connection.settings_dict
    auth = db["USER"] or ""
    if db["PASSWORD"]:
        auth += f":{db['PASSWORD']}"
    host = f"{auth}@{db['HOST'] or 'localhost'}" if auth else db["HOST"] or "localhost"
    return f"postgres://{host}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and all its children at once, like a machine that died."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class WorkerFactory:
    tmp_path: Path
    started: list[Worker] = field(default_factory=list)

    def __call__(
        self,
        *,
        redis_url: str | None = None,
        concurrency: int = 4,
        beat: bool = True,
        queues: str = WORKER_QUEUES,
        **env: str,
    ) -> Worker:
        name = f"w{len(self.started)}-{uuid.uuid4().hex[:6]}"
        log = self.tmp_path / f"{name}.log"
        command = [
            CELERY,
            "-A",
            "config",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--queues",
            queues,
        ]
        if beat:
            command += ["--beat", "--schedule", str(self.tmp_path / f"{name}-beat")]
        process_env = {
            **os.environ,
            **WORKER_ENV,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url or settings.CELERY_BROKER_URL,
            **env,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=process_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(process, log)
        self.started.append(worker)
        wait_for(
            lambda: " ready." in worker.output() or process.poll() is not None,
            timeout=WORKER_READY_TIMEOUT,
        )
        assert process.poll() is None, worker.output()
        return worker


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(interval)


def purge_queues() -> None:
    """Drop every message waiting in this run's queues (jobs' and webhook deliveries')."""
    with celery_app.connection_for_write() as conn:
        for queue in WORKER_QUEUES.split(","):
            conn.default_channel.queue_purge(queue)


@contextmanager
def _workers(tmp_path: Path) -> Iterator[WorkerFactory]:
    purge_queues()
    factory = WorkerFactory(tmp_path)
    try:
        yield factory
    finally:
        for worker in factory.started:
            worker.kill()
            # Shown by pytest for a failed test only.
            print(f"--- {worker.log.name} ---\n{worker.output()[-20000:]}")


@pytest.fixture
def start_worker(transactional_db: None, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Starts workers on demand (after purging this run's queue); kills them all afterwards,
    before the test database is flushed."""
    with _workers(tmp_path) as factory:
        yield factory


@pytest.fixture(scope="class")
def class_worker(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One worker for a whole test class, for tests that need nothing special of it."""
    with django_db_blocker.unblock(), _workers(tmp_path_factory.mktemp("worker")) as factory:
        yield factory()


@contextmanager
def broker_url(url: str) -> Iterator[None]:
    """Point this process's Celery app (its dispatches) at another broker for a while."""
    previous = celery_app.conf.broker_url

    def use(value: str) -> None:
        celery_app.conf.broker_url = value  # type: ignore[misc]
        # The producer pool is built from the URL on first use; drop it so the next publish
        # connects to the new one.
        celery_app.amqp._producer_pool = None
        celery_app._pool = None

    use(url)
    try:
        yield
    finally:
        use(previous)


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    redis = ThrowawayRedis(port=free_port())
    yield redis
    redis.stop()
