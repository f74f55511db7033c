"""Schedules: a job made from a stored spec on a cron (croniter, five fields, in an IANA
timezone) or every ``interval_seconds``.

Exactly once per due time, however many beat processes fire: a firing claims its due time with
a compare-and-set on ``next_run_at`` (``UPDATE ... WHERE id = %s AND next_run_at = %s``) and
creates the job in the same transaction, so of two firings of one due time exactly one updates
the row, and a failed job create gives the due time back. The next due time is the first one
after *now*, so after downtime at most one missed run is made up.
See docs/decisions/0101-schedules.md.
"""

import dataclasses
import json
import logging
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from croniter import croniter
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from runner_jobs.errors import JobInputError, JobServiceError
from runner_jobs.models import ACTIVE_STATUSES, RunnerJob, Schedule, ScheduleOverlap
from workspaces.models import Workspace

from .jobs import JobSpec, job_create

logger = logging.getLogger(__name__)

CRON_FIELDS = 5
INTERVAL_MIN_SECONDS = 10
# A year: beyond it an interval is a typo, and timedelta arithmetic stays far from overflow.
INTERVAL_MAX_SECONDS = 366 * 24 * 3600
# Due schedules fired per pass of the beat's task; the rest wait for the next pass.
FIRE_BATCH_SIZE = 100


class ScheduleNotFoundError(JobServiceError):
    code = "not_found"
    status_code = 404
    default_detail = "No such schedule."


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: exactly one of ``cron`` and ``interval_seconds``."""

    cron: str = ""
    interval_seconds: int | None = None
    timezone: str = "UTC"

    def errors(self) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if bool(self.cron) == (self.interval_seconds is not None):
            errors["non_field_errors"] = ["Give exactly one of cron and interval_seconds."]
        if self.cron and (
            len(self.cron.split()) != CRON_FIELDS or not croniter.is_valid(self.cron)
        ):
            errors["cron"] = [
                "Must be a cron expression of five fields (minute hour day month weekday)."
            ]
        if self.interval_seconds is not None and not (
            INTERVAL_MIN_SECONDS <= self.interval_seconds <= INTERVAL_MAX_SECONDS
        ):
            errors["interval_seconds"] = [
                f"Must be between {INTERVAL_MIN_SECONDS} and {INTERVAL_MAX_SECONDS} seconds."
            ]
        if self.timezone not in _timezones():
            errors["timezone"] = ["Must be an IANA timezone name, e.g. Europe/Paris."]
        return errors

    def next_after(self, now: datetime, *, previous: datetime | None = None) -> datetime:
        """The first due time after ``now``. An interval counts from ``previous`` (the due time
        just fired) when there is one, so it does not drift by the firing's delay."""
        if self.interval_seconds is not None:
            step = timedelta(seconds=self.interval_seconds)
            if previous is None:
                return now + step
            missed = (now - previous) // step
            return previous + step * (max(missed, 0) + 1)
        local = now.astimezone(zoneinfo.ZoneInfo(self.timezone))
        due: datetime = croniter(self.cron, local).get_next(datetime)
        return due.astimezone(UTC)

    @classmethod
    def of(cls, schedule: Schedule) -> "Timing":
        return cls(schedule.cron, schedule.interval_seconds, schedule.timezone)


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _spec_store(spec: JobSpec) -> dict[str, Any]:
    """The spec as stored JSON (every field, dates as ISO 8601)."""
    stored: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(spec), cls=DjangoJSONEncoder))
    return stored


def schedule_spec(schedule: Schedule) -> JobSpec:
    """The spec of the jobs ``schedule`` makes."""
    names = {field.name for field in dataclasses.fields(JobSpec)}
    return JobSpec(**{k: v for k, v in schedule.job.items() if k in names})


def _errors_raise(errors: dict[str, list[str]]) -> None:
    if errors:
        raise JobInputError(errors)


def schedule_create(
    *,
    workspace: Workspace,
    name: str,
    timing: Timing,
    spec: JobSpec,
    overlap: str = ScheduleOverlap.ALLOW,
    paused: bool = False,
    created_by: User | None = None,
) -> Schedule:
    """A new schedule; its first due time is the first after now. Bad timing or job fields:
    ``JobInputError`` (a 400), nothing written."""
    _errors_raise(timing.errors())
    spec.job_type()
    try:
        with transaction.atomic():
            return Schedule.objects.create(
                workspace=workspace,
                name=name,
                cron=timing.cron,
                interval_seconds=timing.interval_seconds,
                timezone=timing.timezone,
                job=_spec_store(spec),
                overlap=overlap,
                paused=paused,
                next_run_at=timing.next_after(timezone.now()),
                created_by=created_by,
            )
    except IntegrityError as exc:
        raise JobInputError(
            {"name": ["This workspace already has a schedule of that name."]}
        ) from exc


def schedule_update(
    *,
    schedule_id: uuid.UUID | str,
    name: str | None = None,
    timing: Timing | None = None,
    spec: JobSpec | None = None,
    overlap: str | None = None,
    paused: bool | None = None,
) -> Schedule:
    """Change a schedule (None leaves a field as it is). A new timing, or a resume, sets the next
    due time from now: the runs missed while paused are not made up."""
    with transaction.atomic():
        schedule = _schedule_lock(schedule_id)
        if timing is not None:
            _errors_raise(timing.errors())
        if spec is not None:
            spec.job_type()
            schedule.job = _spec_store(spec)
        if name is not None:
            schedule.name = name
        if overlap is not None:
            schedule.overlap = overlap
        resumed = paused is False and schedule.paused
        if paused is not None:
            schedule.paused = paused
        if timing is not None:
            schedule.cron = timing.cron
            schedule.interval_seconds = timing.interval_seconds
            schedule.timezone = timing.timezone
        if timing is not None or resumed:
            schedule.next_run_at = Timing.of(schedule).next_after(timezone.now())
        try:
            with transaction.atomic():
                schedule.save()
        except IntegrityError as exc:
            raise JobInputError(
                {"name": ["This workspace already has a schedule of that name."]}
            ) from exc
        return schedule


def schedule_delete(*, schedule_id: uuid.UUID | str) -> None:
    """Delete a schedule; its jobs stay (their ``schedule`` becomes null)."""
    with transaction.atomic():
        _schedule_lock(schedule_id).delete()


def _schedule_lock(schedule_id: uuid.UUID | str) -> Schedule:
    schedule = Schedule.objects.select_for_update().filter(pk=schedule_id).first()
    if schedule is None:
        raise ScheduleNotFoundError()
    return schedule


def _job_make(schedule: Schedule, *, fire_time: datetime | None) -> RunnerJob:
    """Create the schedule's job (inside the caller's transaction) and link it."""
    actor = f"schedule:{schedule.pk}"
    job = job_create(workspace=schedule.workspace, spec=schedule_spec(schedule), actor=actor).job
    # Set in the job's creating transaction, before anyone can see the job.
    RunnerJob.objects.filter(pk=job.pk).update(schedule=schedule)
    job.schedule = schedule
    logger.info(
        "Schedule %s made job %s (due %s)",
        schedule.pk,
        job.pk,
        fire_time.isoformat() if fire_time else "now, triggered",
    )
    return job


def _previous_job_live(schedule: Schedule) -> bool:
    return RunnerJob.objects.filter(schedule=schedule, status__in=ACTIVE_STATUSES).exists()


def schedule_trigger(*, schedule_id: uuid.UUID | str) -> RunnerJob:
    """One run now, whatever the schedule's timing, pause or overlap (an operator asked for it);
    the next due time does not move."""
    with transaction.atomic():
        schedule = _schedule_lock(schedule_id)
        job = _job_make(schedule, fire_time=None)
        Schedule.objects.filter(pk=schedule.pk).update(last_run_at=timezone.now())
        return job


@dataclass
class FireReport:
    # Jobs made; due times passed over by overlap "skip"; due times another firing had already
    # claimed; due times whose job could not be made.
    fired: int = 0
    overlapped: int = 0
    lost: int = 0
    failed: int = 0


def schedules_fire(*, now: datetime | None = None) -> FireReport:
    """Fire every due schedule once (the beat's periodic task). Safe to run from several beat
    processes at once: each due time is claimed by a compare-and-set."""
    now = now or timezone.now()
    report = FireReport()
    due = list(
        Schedule.objects.filter(paused=False, next_run_at__lte=now)
        .select_related("workspace")
        .order_by("next_run_at")[:FIRE_BATCH_SIZE]
    )
    for schedule in due:
        outcome = _schedule_fire(schedule, now=now)
        setattr(report, outcome, getattr(report, outcome) + 1)
    return report


def _schedule_fire(schedule: Schedule, *, now: datetime) -> str:
    fire_time = schedule.next_run_at
    following = Timing.of(schedule).next_after(now, previous=fire_time)
    try:
        with transaction.atomic():
            claimed = Schedule.objects.filter(
                pk=schedule.pk, next_run_at=fire_time, paused=False
            ).update(next_run_at=following)
            if not claimed:
                # Another beat fired this due time (or the schedule changed meanwhile).
                return "lost"
            if schedule.overlap == ScheduleOverlap.SKIP and _previous_job_live(schedule):
                logger.info(
                    "Schedule %s passed over %s: its previous job is live", schedule.pk, fire_time
                )
                return "overlapped"
            _job_make(schedule, fire_time=fire_time)
            Schedule.objects.filter(pk=schedule.pk).update(last_run_at=now)
            return "fired"
    except JobInputError:
        # The stored job no longer passes (its type was unregistered): this due time is spent,
        # not retried every few seconds.
        logger.warning("Schedule %s could not make its job", schedule.pk, exc_info=True)
        Schedule.objects.filter(pk=schedule.pk, next_run_at=fire_time).update(next_run_at=following)
        return "failed"
