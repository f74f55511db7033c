"""A request reads each workspace's webhook endpoints once (``herald.webhook_endpoints_memo``)."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from job_events.herald import webhook_endpoints_memo


class WebhookEndpointsMemoMiddleware:
    """A request that writes several events (a create: ``job.created``, then ``job.queued``)
    reads its workspace's endpoints once. Sync only, like the middleware around it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with webhook_endpoints_memo():
            return self.get_response(request)
