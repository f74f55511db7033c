"""HTTP details shared by every API that shows or changes a job (consumer and coordinator):
``ETag: "<version>"`` on job responses and ``If-Match`` on writes."""

import re

from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from runner_jobs.models import RunnerJob

# One entity tag, strong or weak (a weak tag names the same version here): "3" or W/"3".
_ENTITY_TAG = re.compile(r'(?:W/)?"(\d{1,10})"')


def job_etag(job: RunnerJob) -> str:
    return f'"{job.version}"'


def with_etag(response: Response, job: RunnerJob) -> Response:
    """``response`` with the ETag of ``job``'s current version."""
    response["ETag"] = job_etag(job)
    return response


def if_match_version(request: Request) -> int | None:
    """The job version a write is conditional on: None when there is no ``If-Match`` (or it is
    ``*``). A value that is not one entity tag of ours is a 400, not a silent unconditional
    write."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = _ENTITY_TAG.fullmatch(header.strip())
    if match is None:
        raise ValidationError(
            {"If-Match": ['Must be one entity tag from this job\'s ETag, e.g. "3".']},
            code="invalid_if_match",
        )
    return int(match.group(1))
