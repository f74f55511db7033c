"""factory-boy factories, one per model. Jobs in a given state are made through the service
layer (``job_in_state``), so their events and versions are what production would write."""

from typing import Any

import factory
from django.contrib.auth.models import User
from django.db import transaction

from runner_jobs import services
from runner_jobs.models import RunnerJob
from runner_jobs.serializers import JOB_SPEC_FIELDS
from runner_jobs.services.events import event_record
from workspaces.models import Membership, Workspace


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"ws-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    workspace = factory.SubFactory(WorkspaceFactory)
    role = Membership.Role.MEMBER


def job_in_state(
    status: str = "pending",
    *,
    workspace: Workspace | None = None,
    type: str = "echo",
    payload: dict[str, Any] | None = None,
    **create_kwargs: Any,
) -> RunnerJob:
    """A job brought to ``status`` through the services, as the product would. ``create_kwargs``
    are fields of the job's spec (priority, agent_task_id, ...) or of ``job_create``.

    ``pending`` is a job as the previous version's create left it before its hand-over to the
    broker (inserted with its ``job.created`` event, not yet queued): today's create inserts
    jobs ``queued``, but such rows may still exist and the sweeper hands them over."""
    spec_fields = {name: create_kwargs.pop(name) for name in JOB_SPEC_FIELDS & create_kwargs.keys()}
    if status == "pending":
        return _legacy_pending_job(
            workspace=workspace or WorkspaceFactory(),
            type=type,
            payload=payload if payload is not None else {"n": 1},
            created_by=create_kwargs.get("created_by"),
            **spec_fields,
        )
    job = services.job_create(
        workspace=workspace or WorkspaceFactory(),
        spec=services.JobSpec(
            type=type, payload=payload if payload is not None else {"n": 1}, **spec_fields
        ),
        actor="system",
        **create_kwargs,
    ).job
    if status == "queued":
        return job
    if status == "cancelled":
        return services.job_cancel(job_id=job.pk, actor="system")
    job = services.job_start(job_id=job.pk, actor="worker", worker="w1")
    if status == "running":
        return job
    if status == "completed":
        return services.job_complete(job_id=job.pk, result={"ok": True}, actor="worker")
    assert status == "failed", status
    return services.job_fail(job_id=job.pk, error="boom", actor="worker")


def _legacy_pending_job(
    *, workspace: Workspace, type: str, payload: dict[str, Any], created_by: Any, **fields: Any
) -> RunnerJob:
    with transaction.atomic():
        job = RunnerJob.objects.create(
            workspace=workspace, type=type, payload=payload, created_by=created_by, **fields
        )
        event_record(job=job, type="job.created", actor="system", payload={"type": type})
    return job
