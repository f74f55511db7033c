"""Property-based fuzz of the consumer API from its own OpenAPI schema (schemathesis): whatever
it sends, no 5xx and no response that breaks the schema (status codes, headers, bodies)."""

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api.conftest import token_client
from tests.factories import job_in_state

OPENAPI = SchemaGenerator().get_schema(request=None, public=True)
# The consumer API. The event stream (issue 6's, never-ending for a live job) has its own tests.
schema = (
    schemathesis.openapi.from_dict(OPENAPI)
    .include(path_regex=r"^/api/v1/runner-jobs/")
    .exclude(path_regex=r"/stream/$")
)
schema.config.update(base_url="http://testserver")
# In-process WSGI calls (also for schemathesis' own probes, e.g. the same call without auth).
schema.app = get_wsgi_application()

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


# "Schema-valid data must be accepted" cannot hold here: the rules a request must also meet are
# not in the schema (the type is registered, the payload is at most 256 KiB and has no U+0000,
# If-Match names the current version). Those refusals are 4xx by design, tested one by one.
SCHEMA_BLIND_CHECKS = [positive_data_acceptance]


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """The WSGI handler closes the database connection at the end of each request, which would
    end the test's transaction; Django's own test client disconnects the same hook."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


STATUSES = ("pending", "queued", "running", "completed", "failed", "cancelled")


@pytest.fixture
def jobs(wsgi_keeps_the_test_connection, member, workspace, other_workspace):
    """Jobs in every state, in alice's workspace and in another one."""
    return [job_in_state(s, workspace=ws) for s in STATUSES for ws in (workspace, other_workspace)]


@pytest.fixture
def token(jobs, user):
    return token_client(user)._credentials["HTTP_AUTHORIZATION"]


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_fuzz_with_random_ids(case, token):
    case.call_and_validate(headers={"Authorization": token}, excluded_checks=SCHEMA_BLIND_CHECKS)


@pytest.mark.django_db
@schema.include(path_regex=r"^/api/v1/runner-jobs/\{id\}/").parametrize()
@FUZZ
def test_fuzz_on_existing_jobs(case, token, jobs):
    """The same, aimed at real jobs (in every state, alice's and another workspace's): the
    generated id picks one, so cancel, retry and reads meet each state and both tenancies."""
    if isinstance(case.path_parameters, dict) and isinstance(case.path_parameters.get("id"), str):
        pick = sum(map(ord, case.path_parameters["id"])) % len(jobs)
        case.path_parameters["id"] = str(jobs[pick].id)
    case.call_and_validate(headers={"Authorization": token}, excluded_checks=SCHEMA_BLIND_CHECKS)
