"""Schema fuzz (schemathesis) of the schedules, the workspace feed's pages and the workers list:
whatever is sent, no 5xx and no response outside the schema."""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application

from runner_jobs import services
from runner_jobs.services.schedules import Timing, schedule_create
from tests.api.conftest import other_workspace, token_client  # noqa: F401  (a fixture)
from tests.api.test_schema_fuzz import (  # noqa: F401  (a fixture)
    FUZZ,
    OPENAPI,
    SCHEMA_BLIND_CHECKS,
    wsgi_keeps_the_test_connection,
)
from tests.factories import job_in_state

schema = schemathesis.openapi.from_dict(OPENAPI).include(
    path_regex=r"^/api/v1/(schedules/|events/$|workers/)"
)
schema.config.update(base_url="http://testserver")
schema.app = get_wsgi_application()


@pytest.fixture
def token(wsgi_keeps_the_test_connection, user, member, workspace, other_workspace):  # noqa: F811
    job_in_state("completed", workspace=workspace)
    for ws in (workspace, other_workspace):
        schedule_create(
            workspace=ws,
            name="nightly",
            timing=Timing(cron="0 3 * * *"),
            spec=services.JobSpec(type="echo", payload={}),
        )
    return token_client(user)._credentials["HTTP_AUTHORIZATION"]


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_fuzz(case, token):
    case.call_and_validate(headers={"Authorization": token}, excluded_checks=SCHEMA_BLIND_CHECKS)
