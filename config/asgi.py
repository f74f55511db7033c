"""The web tier's entry point (gunicorn with uvicorn workers, see the Procfile): one port, two
ways of serving. See docs/decisions/0050-serving-streams.md.

* Event streams (``/api/v1/runner-jobs/<id>/events/stream/`` and the workspace feed,
  ``/api/v1/events/stream/``) go to Django's ASGI handler: an
  async view, so an open stream is a coroutine, not a thread. A stream takes no request body,
  and Django's ASGI handler would read (and spool) a whole body before the view could refuse
  it: the stream sees an empty body instead, and whatever the client sends is never read.
* Every other request goes to Django's WSGI handler on a fixed pool of ``WEB_THREADS`` threads
  (a2wsgi), as under gunicorn's gthread worker. Django's ASGI handler would run each sync DRF
  view on a thread of its own, made for that request, so no database connection could be
  reused (and a persistent one would leak): measured, that halved the API's requests/s.
"""

import os
import re
from typing import Any

from a2wsgi import WSGIMiddleware
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# The per-job stream and the workspace feed (/api/v1/events/stream/).
STREAM_PATH = re.compile(r"^/api/v1/(?:runner-jobs/[^/]+/)?events/stream/?$")

django_asgi = get_asgi_application()
django_wsgi = WSGIMiddleware(
    get_wsgi_application(),  # type: ignore[arg-type]  # Django's stubs type the WSGI app loosely
    workers=int(os.environ.get("WEB_THREADS", "16")),
)


def without_body(receive: Any) -> Any:
    """``receive`` for a request whose body is not read: the first message is an empty, final
    body; later ones are only the disconnect Django listens for (body chunks are skipped)."""
    started = False

    async def receive_no_body() -> dict[str, Any]:
        nonlocal started
        if not started:
            started = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return dict(message)

    return receive_no_body


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await django_asgi(scope, receive, send)
    elif STREAM_PATH.match(scope["path"]):
        await django_asgi(scope, without_body(receive), send)
    else:
        await django_wsgi(scope, receive, send)  # type: ignore[arg-type]
