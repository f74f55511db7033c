"""Worker heartbeats: every Celery worker process refreshes its row every few seconds (from a
thread of its main process, ``runner_jobs.heartbeat``), and every coordinator claim refreshes
the claimer's. The row's ``name`` is what the worker writes as a job's ``lease_owner``, so a
worker's running jobs are found without it reporting them (``runner_jobs.workers``)."""

from datetime import timedelta

from django.utils import timezone

from runner_jobs.models import Worker, WorkerKind

# A worker not seen for this long is forgotten (a restarted machine comes back under a new
# hostname; its old row would otherwise stay forever).
WORKER_FORGET_AFTER = timedelta(days=1)


def worker_seen(
    *,
    kind: WorkerKind,
    name: str,
    hostname: str = "",
    pid: int | None = None,
    started: bool = False,
) -> None:
    """Record that ``name`` is alive now (one upsert). ``started`` marks a new process of that
    name: its ``started_at`` is reset too."""
    now = timezone.now()
    fields = ["hostname", "pid", "last_seen_at", "stopped_at"] + (["started_at"] if started else [])
    Worker.objects.bulk_create(
        [
            Worker(
                kind=kind,
                name=name,
                hostname=hostname,
                pid=pid,
                started_at=now,
                last_seen_at=now,
                stopped_at=None,
            )
        ],
        update_conflicts=True,
        unique_fields=["kind", "name"],
        update_fields=fields,
    )
    if started:
        Worker.objects.filter(last_seen_at__lt=now - WORKER_FORGET_AFTER).delete()


def worker_stopped(*, kind: WorkerKind, name: str) -> None:
    """A worker that shuts down cleanly says so: it shows as not alive at once."""
    Worker.objects.filter(kind=kind, name=name).update(stopped_at=timezone.now())
