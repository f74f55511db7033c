"""Real Celery worker (and beat) processes, as in tests/execution."""

from tests.execution.conftest import start_worker  # noqa: F401  (a fixture)
