"""``verify_webhook`` on a real delivery: a job run by a real worker, its ``job.completed``
event POSTed by the webhook task to a local receiver, checked as a receiving service would."""

import json
import time

import pytest
from runner_jobs_client import SIGNATURE_HEADER, verify_webhook

from job_events import herald
from tests.events.webhooks import receiver  # noqa: F401  (a local HTTP endpoint)
from tests.execution.conftest import wait_for
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_real_delivery_verifies_and_a_forged_one_does_not(client, start_worker, receiver):  # noqa: F811
    # The receiver is on 127.0.0.1: allowed for the worker as the fixture allows it here.
    start_worker(beat=False, RUNNER_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8")
    endpoint = herald.webhook_endpoint_create(
        workspace=Workspace.objects.get(slug="acme"),
        url=receiver.url,
        event_types=["job.completed"],
    )
    job = client.jobs.create("acme", "echo", {"hello": "world"})
    wait_for(lambda: receiver.requests, timeout=30)
    (delivery,) = receiver.requests
    header = delivery.headers[SIGNATURE_HEADER]
    body = delivery.body

    assert verify_webhook(endpoint.secret, header, body)
    assert verify_webhook(endpoint.secret, header, body.decode())
    delivered = json.loads(body)
    assert delivered["event"]["type"] == "job.completed"
    assert delivered["job"]["id"] == job.id
    assert delivered["job"]["result"] == {"hello": "world"}

    # Anything changed, and it no longer verifies.
    assert not verify_webhook("whsec_another", header, body)
    assert not verify_webhook(endpoint.secret, header, body.replace(b"world", b"w0rld"))
    assert not verify_webhook(endpoint.secret, header.replace("v1=", "v1=0"), body)
    assert not verify_webhook(endpoint.secret, None, body)
    assert not verify_webhook(endpoint.secret, "v1=abc", body)
    # A replay later than the tolerance is refused, however good its signature.
    assert not verify_webhook(endpoint.secret, header, body, now=time.time() + 301)
    assert verify_webhook(endpoint.secret, header, body, tolerance=600, now=time.time() + 301)
