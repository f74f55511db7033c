"""Property-based fuzz of the whole API from its own OpenAPI schema (schemathesis), once with a
consumer token and once with a coordinator key: whatever it sends, no 5xx, and every answer is
one the schema documents (status code, headers, body). A consumer token on the coordinator API
(and a key on the consumer API) must get the 401 the schema promises."""

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import token_client
from tests.coordinator.conftest import make_key
from tests.factories import MembershipFactory, job_in_state

OPENAPI = SchemaGenerator().get_schema(request=None, public=True)
# The event streams are in the schema but never end (a live job's, the workspace feed), so they
# are not fuzzed here; they have their own tests.
schema = schemathesis.openapi.from_dict(OPENAPI).exclude(path_regex=r"/stream/$")
schema.config.update(base_url="http://testserver")
# In-process WSGI calls (also for schemathesis' own probes, e.g. the same call without auth).
schema.app = get_wsgi_application()

# A few dozen examples per operation, the same ones on every run.
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)

# "Schema-valid data must be accepted" cannot hold here: the rules a request must also meet are
# not in the schema (the type is registered, the payload is at most 256 KiB, If-Match names the
# current version, a lease token is the current attempt's). Those refusals are 4xx by design,
# tested one by one. Every other check runs, the two conformance checks named explicitly.
SCHEMA_BLIND_CHECKS = [positive_data_acceptance]
CONFORMANCE_CHECKS = [response_schema_conformance, status_code_conformance]


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
    """Jobs in every state, of a Celery type and of a coordinator's, in alice's workspace (where
    she is also an admin of the webhooks) and in another one."""
    MembershipFactory(user=member.user, workspace=other_workspace, role="admin")
    return [
        job_in_state(status, type=job_type, workspace=ws)
        for status in STATUSES
        for job_type in ("echo", "agent-task")
        for ws in (workspace, other_workspace)
    ]


@pytest.fixture(params=["consumer token", "coordinator key"])
def credentials(request, jobs, user, workspace) -> dict[str, str]:
    if request.param == "consumer token":
        return {"Authorization": token_client(user)._credentials["HTTP_AUTHORIZATION"]}
    return {"X-API-Key": make_key("fuzz", [workspace])}


def aim_at_a_job(case, jobs) -> None:
    """Point a generated ``{id}`` at one of the real jobs (picked by the generated value), so
    reads, reports, cancels and retries meet every state, both types and both tenancies."""
    if isinstance(case.path_parameters, dict) and isinstance(case.path_parameters.get("id"), str):
        pick = sum(map(ord, case.path_parameters["id"])) % len(jobs)
        case.path_parameters["id"] = str(jobs[pick].id)


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_fuzz_with_random_ids(case, credentials):
    case.call_and_validate(
        headers=credentials,
        additional_checks=CONFORMANCE_CHECKS,
        excluded_checks=SCHEMA_BLIND_CHECKS,
    )


@pytest.mark.django_db
@schema.include(path_regex=r"/jobs/\{id\}/").parametrize()
@FUZZ
def test_fuzz_on_existing_jobs(case, credentials, jobs):
    aim_at_a_job(case, jobs)
    # Aiming rewrites the generated id (and the credentials are always sent), so a case made to
    # break the schema there may no longer break it: "invalid data is rejected" is checked by
    # the random-id test, where cases reach the API as generated.
    case.call_and_validate(
        headers=credentials,
        additional_checks=CONFORMANCE_CHECKS,
        excluded_checks=[*SCHEMA_BLIND_CHECKS, negative_data_rejection],
    )
