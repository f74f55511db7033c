"""The heartbeat of a Celery worker process: a thread of its main process refreshes the
worker's row every ``HEARTBEAT_SECONDS`` (a third of the lease at most), from ``worker_ready``
until ``worker_shutdown``. Connected in ``RunnerJobsConfig.ready``; only a worker sends these
signals."""

import logging
import os
import socket
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import DatabaseError, connection

from runner_jobs.models import WorkerKind
from runner_jobs.services.workers import worker_seen, worker_stopped

logger = logging.getLogger(__name__)

HEARTBEAT_MAX_SECONDS = 5.0


class Heartbeat(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.worker_name = name
        self.interval = min(HEARTBEAT_MAX_SECONDS, settings.RUNNER_JOB_LEASE_SECONDS / 3)
        self.stopping = threading.Event()

    def beat(self, *, started: bool = False) -> None:
        try:
            worker_seen(
                kind=WorkerKind.CELERY,
                name=self.worker_name,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                started=started,
            )
        except DatabaseError:
            logger.warning("Worker heartbeat not recorded", exc_info=True)
        finally:
            # A connection of its own, closed each time: a PostgreSQL restart costs one beat.
            connection.close()

    def run(self) -> None:
        self.beat(started=True)
        while not self.stopping.wait(self.interval):
            self.beat()
        try:
            worker_stopped(kind=WorkerKind.CELERY, name=self.worker_name)
        except DatabaseError:
            logger.warning("Worker stop not recorded", exc_info=True)
        finally:
            connection.close()


_heartbeat: list[Heartbeat] = []


@worker_ready.connect
def heartbeat_start(sender: Any = None, **kwargs: Any) -> None:
    heartbeat = Heartbeat(str(sender.hostname))
    _heartbeat.append(heartbeat)
    heartbeat.start()


@worker_shutdown.connect
def heartbeat_stop(sender: Any = None, **kwargs: Any) -> None:
    for heartbeat in _heartbeat:
        heartbeat.stopping.set()
        heartbeat.join(5)
    _heartbeat.clear()
