"""The peer's baseline task: a Procrastinate task that does nothing (``bench.noop`` for Celery)."""

from procrastinate.contrib.django import app

PEER_NOOP = "bench.peer_noop"


@app.task(name=PEER_NOOP)
def peer_noop() -> None:
    """Nothing: what Procrastinate's queue and worker cost on their own."""
