"""The baseline of the end-to-end benchmark: a Celery task that does nothing."""

from celery import shared_task


@shared_task(name="bench.noop")
def noop() -> None:
    """Nothing: what the broker and worker cost on their own."""
