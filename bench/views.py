"""The baseline of the create-job benchmark: a bare Django view doing one INSERT."""

import json

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

BASELINE_TABLE = "bench_baseline_row"
CREATE_BASELINE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {BASELINE_TABLE} "
    "(id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz DEFAULT now())"
)


@csrf_exempt
@require_POST
def baseline_insert(request: HttpRequest) -> JsonResponse:
    """Parse the body, INSERT one row, answer 201: the least a create endpoint can do."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {BASELINE_TABLE} (payload) VALUES (%s) RETURNING id",
            [json.dumps(json.loads(request.body))],
        )
        (row_id,) = cursor.fetchone()
    return JsonResponse({"id": row_id}, status=201)
