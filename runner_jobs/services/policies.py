"""Per-workspace job type policies (SPEC §8, "Type policies"): pause a type in a workspace, or cap
its running jobs there (``max_running``). The dispatcher's predicate reads them
(``flow.runnable_sql``), so workers and coordinators obey them alike; a change that lets more
of a Celery-run type's jobs start rings their bells after commit
(docs/decisions/0141-type-policies.md)."""

import enum
import logging
import math
from functools import partial
from typing import Any

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from runner_jobs.errors import BrokerUnavailableError, JobInputError, JobTypeNotFoundError
from runner_jobs.models import MAX_RUNNING_MAX, JobStatus, JobTypePolicy, RunnerJob
from runner_jobs.registry import job_type_get
from workspaces.models import Workspace

from . import bell, flow

logger = logging.getLogger(__name__)
audit = structlog.get_logger("runner_jobs.policies")

# The most bells a resume (or a raised cap) rings at once: one per job that may start now. Jobs
# beyond it are rung by the sweeper's redispatch (they are overdue by then) or by slots freeing.
RESUME_BELLS_MAX = 100


class Unset(enum.Enum):
    """A field a change leaves as it is (``None`` is a value: ``max_running`` null, no cap)."""

    UNSET = enum.auto()


UNSET = Unset.UNSET
Policy = tuple[bool, int | None]  # (paused, max_running)


def _errors(paused: Any, max_running: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if paused is not UNSET and not isinstance(paused, bool):
        errors["paused"] = ["Must be true or false."]
    if max_running not in (UNSET, None) and (
        isinstance(max_running, bool)
        or not isinstance(max_running, int)
        or not 1 <= max_running <= MAX_RUNNING_MAX
    ):
        errors["max_running"] = [f"Must be null or an integer from 1 to {MAX_RUNNING_MAX}."]
    return errors


def _cap(max_running: int | None) -> float:
    return math.inf if max_running is None else max_running


def _lets_more_start(before: Policy, after: Policy) -> bool:
    """Whether ``after`` may start jobs ``before`` held back: a resume, or a higher cap."""
    (paused_before, cap_before), (paused_after, cap_after) = before, after
    if paused_after:
        return False
    return paused_before or _cap(cap_after) > _cap(cap_before)


def job_type_policy_update(
    *,
    workspace: Workspace,
    type: str,
    actor: str,
    paused: bool | Unset = UNSET,
    max_running: int | Unset | None = UNSET,
) -> JobTypePolicy:
    """Set ``type``'s policy in ``workspace`` (the fields given; the others stay). Raises
    ``JobTypeNotFoundError`` for a type not registered and ``JobInputError`` for bad values,
    writing nothing. A change is logged (``job_type_policy_changed``, with ``actor``, before and
    after); one that lets jobs start rings the bells of the type's runnable queued jobs there."""
    job_type = job_type_get(type)
    if job_type is None:
        raise JobTypeNotFoundError(f"No job type {type!r} is registered.")
    if errors := _errors(paused, max_running):
        raise JobInputError(errors)
    while True:
        with transaction.atomic():
            policy = (
                JobTypePolicy.objects.select_for_update()
                .filter(workspace=workspace, type=type)
                .first()
            ) or JobTypePolicy(workspace=workspace, type=type)
            before: Policy = (policy.paused, policy.max_running)
            if not isinstance(paused, Unset):
                policy.paused = paused
            if not isinstance(max_running, Unset):
                policy.max_running = max_running
            after: Policy = (policy.paused, policy.max_running)
            if after == before:
                return policy
            policy.updated_by = actor
            try:
                # A savepoint: a concurrent first change of this type inserted its row first.
                with transaction.atomic():
                    policy.save()
            except IntegrityError:
                continue  # lock that row and decide again
            transaction.on_commit(
                partial(_changed, workspace, type, actor, before, after), robust=True
            )
            if _lets_more_start(before, after) and not job_type.external:
                ring = partial(
                    job_type_bells_ring, workspace_id=workspace.pk, type=type, cap=after[1]
                )
                transaction.on_commit(ring, robust=True)
            return policy


def _changed(workspace: Workspace, type: str, actor: str, before: Policy, after: Policy) -> None:
    audit.info(
        "job_type_policy_changed",
        workspace=workspace.slug,
        type=type,
        actor=actor,
        paused=[before[0], after[0]],
        max_running=[before[1], after[1]],
    )


def job_type_bells_ring(*, workspace_id: int, type: str, cap: int | None) -> int:
    """Ring one bell per queued job of ``type`` in the workspace that may start now (runnable,
    as many as ``cap`` leaves room for, at most ``RESUME_BELLS_MAX``), highest priority first;
    how many were rung. A broker refusal stops it (logged): the sweeper rings them later."""
    room = RESUME_BELLS_MAX
    if cap is not None:
        running = RunnerJob.objects.filter(
            workspace_id=workspace_id, type=type, status=JobStatus.RUNNING
        ).count()
        room = min(room, cap - running)
    if room <= 0:
        return 0
    jobs = (
        RunnerJob.objects.filter(
            workspace_id=workspace_id,
            pk__in=flow.runnable_ids(types=[type], now=timezone.now()),
        )
        .order_by("-priority", "created_at")
        .values_list("pk", "priority")[:room]
    )
    rung = 0
    for job_id, priority in jobs:
        try:
            bell.bell_ring(job_id=str(job_id), priority=priority)
        except BrokerUnavailableError as exc:
            logger.warning("type %s resumed, bells not rung (the sweeper will): %s", type, exc)
            break
        rung += 1
    return rung
