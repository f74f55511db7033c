"""Webhooks reach the public internet only: hostile URLs are refused at registration (API and
admin), and every delivery checks the addresses again inside its connection (DNS rebinding, a
name with one bad address among good ones, redirects, TLS to the checked address). Endpoints per
workspace are capped. A real local receiver; names are resolved by a stand-in resolver (the
machine has no DNS of its own), the one thing the tests replace."""

import http.server
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import trustme
from django.contrib.auth.models import User
from django.test import Client

from job_events import herald, outbound
from job_events.models import PendingDelivery, WebhookDelivery, WebhookEndpoint
from runner_jobs.models import JobEvent
from tests.api.conftest import token_client
from tests.events.webhooks import URL, endpoint_for, pending_for
from tests.factories import WorkspaceFactory, job_in_state

PUBLIC = "93.184.216.34"

REFUSED_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://[::1]/hook",
    "http://localhost:6379/",
    "http://LOCALHOST./hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://10.0.0.5/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.1/hook",
    "http://[fd00::1]/hook",
    "http://100.64.0.1/hook",
    "http://100.127.255.254/hook",
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "https://intranet.test/hook",
    "https://mixed.test/hook",
]


@pytest.fixture
def names(monkeypatch) -> dict[str, list[str]]:
    """A resolver for ``*.test`` names (what a hostile DNS would answer); others as usual."""
    table: dict[str, list[str]] = {"intranet.test": ["10.20.30.40"], "mixed.test": [PUBLIC]}
    table["mixed.test"].append("192.168.0.10")  # one bad address among good ones
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in table:
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, int(port)),
                )
                for ip in table[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


# --- Registration -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", REFUSED_URLS)
def test_the_api_refuses_an_address_inside(admin_user, names, url):
    body = {"workspace": "acme", "url": url, "event_types": ["*"]}
    response = token_client(admin_user).post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["url"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_the_refusal_says_why(admin_user, names):
    body = {"workspace": "acme", "url": "https://mixed.test/hook", "event_types": ["*"]}
    (message,) = token_client(admin_user).post(URL, body, format="json").json()["url"]
    assert message.startswith("mixed.test resolves to 192.168.0.10, a private address")
    assert "RUNNER_WEBHOOK_ALLOWED_NETWORKS" in message


@pytest.mark.django_db
def test_allowed_networks_let_an_operator_reach_in_cluster_receivers(admin_user, names, settings):
    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8", "fd00::/8"]
    client = token_client(admin_user)
    for url in ["http://10.1.2.3/hook", "https://intranet.test/hook", "http://[fd00::5]/"]:
        body = {"workspace": "acme", "url": url, "event_types": ["*"]}
        assert client.post(URL, body, format="json").status_code == 201, url
    for url in ["http://192.168.1.1/hook", "http://127.0.0.1/hook", "https://mixed.test/"]:
        body = {"workspace": "acme", "url": url, "event_types": ["*"]}
        assert client.post(URL, body, format="json").status_code == 400, url
    assert WebhookEndpoint.objects.count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["http://[::1", "http://[::1]:99999/", "http:///nohost"])
def test_a_malformed_url_is_a_400_not_a_500(admin_user, url):
    body = {"workspace": "acme", "url": url, "event_types": ["*"]}
    response = token_client(admin_user).post(URL, body, format="json")
    assert response.status_code == 400 and "url" in response.json()
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_a_name_that_stopped_resolving_is_logged_at_delivery(workspace):
    endpoint_for(workspace, "https://no-such-host.invalid/hook")
    log = deliver_once(JobEvent.objects.get(job=job_in_state("pending", workspace=workspace)))
    assert log.status_code is None and log.error.startswith("NameResolutionError")


@pytest.mark.django_db
def test_a_public_or_not_yet_resolvable_name_is_accepted(admin_user, names):
    names["public.test"] = [PUBLIC, "2606:2800:220:1::1"]
    client = token_client(admin_user)
    for url in ["https://public.test/hook", "https://no-such-host.invalid/hook"]:
        body = {"workspace": "acme", "url": url, "event_types": ["*"]}
        assert client.post(URL, body, format="json").status_code == 201, url


def staff_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.mark.django_db
def test_the_admin_form_applies_the_same_rule(workspace, names):
    response = staff_client().post(
        "/admin/job_events/webhookendpoint/add/",
        {"workspace": workspace.pk, "url": "http://169.254.169.254/latest", "event_types": '["*"]'},
    )
    assert response.status_code == 200  # the form again, with its error
    assert "link-local address" in str(response.context["adminform"].form.errors["url"])
    assert not WebhookEndpoint.objects.exists()


# --- Delivery ---------------------------------------------------------------------------------


def deliver_once(event: JobEvent) -> WebhookDelivery:
    (pending_id,) = pending_for(event)
    herald.webhook_deliver(pending_id=pending_id)
    return WebhookDelivery.objects.get(attempt=1)


@pytest.mark.django_db
def test_a_name_rebound_inside_after_registration_is_refused_at_delivery(
    receiver, names, workspace, settings
):
    port = receiver.url.split(":")[2].split("/")[0]
    names["rebind.test"] = [PUBLIC]
    endpoint_for(workspace, f"http://rebind.test:{port}/hook")
    names["rebind.test"] = ["127.0.0.1"]  # the attacker's DNS changes its answer
    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = []
    log = deliver_once(JobEvent.objects.get(job=job_in_state("pending", workspace=workspace)))
    assert receiver.requests == []
    assert log.status_code is None and not log.succeeded
    assert log.error.startswith("AddressRefusedError: rebind.test resolves to 127.0.0.1, a loop")


@pytest.mark.django_db
def test_every_address_of_a_name_is_checked_at_delivery(receiver, names, workspace, settings):
    port = receiver.url.split(":")[2].split("/")[0]
    names["twofaced.test"] = ["127.0.0.1"]
    endpoint_for(workspace, f"http://twofaced.test:{port}/hook")
    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    names["twofaced.test"] = ["127.0.0.1", "10.9.9.9"]
    log = deliver_once(JobEvent.objects.get(job=job_in_state("pending", workspace=workspace)))
    assert receiver.requests == []
    assert "10.9.9.9, a private address" in log.error


@pytest.mark.django_db
def test_a_delivery_connects_to_the_checked_address_with_the_urls_host(receiver, names, workspace):
    port = receiver.url.split(":")[2].split("/")[0]
    names["hooks.test"] = ["127.0.0.1"]
    endpoint_for(workspace, f"http://hooks.test:{port}/hook")
    log = deliver_once(JobEvent.objects.get(job=job_in_state("pending", workspace=workspace)))
    assert log.succeeded and log.status_code == 200
    (request,) = receiver.requests
    assert request.headers["Host"] == f"hooks.test:{port}"


@pytest.mark.django_db
def test_an_ipv6_literal_without_a_port_goes_to_the_schemes_port(workspace, settings):
    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    endpoint_for(workspace, "http://[::ffff:127.0.0.1]/hook")
    log = deliver_once(JobEvent.objects.get(job=job_in_state("pending", workspace=workspace)))
    assert "port=80" in log.error and "InvalidURL" not in log.error


@pytest.mark.django_db
def test_a_redirect_is_not_followed(receiver, workspace):
    receiver.statuses = [307]
    receiver.answer_headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    endpoint_for(workspace, receiver.url)
    log = deliver_once(JobEvent.objects.get(job=job_in_state("pending", workspace=workspace)))
    assert len(receiver.requests) == 1
    assert (log.status_code, log.succeeded) == (307, False)
    assert log.error.startswith("HTTP 307")


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch) -> Iterator[Callable[[str], tuple[int, list[str]]]]:
    """An HTTPS receiver on 127.0.0.1 whose certificate (from a CA the client trusts) names a
    given host; yields a starter returning its port and the SNI names it was sent."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    servers: list[http.server.HTTPServer] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    def start(cert_host: str) -> tuple[int, list[str]]:
        sni: list[str] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(cert_host).configure_cert(context)
        context.sni_callback = lambda sock, name, ctx: sni.append(name)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1], sni

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.django_db
def test_tls_to_the_checked_address_verifies_the_urls_name(
    tls_receiver, names, workspace, settings
):
    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    names["secure.test"] = ["127.0.0.1"]
    names["impostor.test"] = ["127.0.0.1"]
    good_port, good_sni = tls_receiver("secure.test")
    bad_port, _ = tls_receiver("someone-else.test")
    event = JobEvent.objects.get(job=job_in_state("pending", workspace=workspace))
    good = endpoint_for(workspace, f"https://secure.test:{good_port}/hook")
    bad = endpoint_for(workspace, f"https://impostor.test:{bad_port}/hook")
    for pending_id in pending_for(event):
        herald.webhook_deliver(pending_id=pending_id)
    assert good_sni == ["secure.test"]
    delivered = WebhookDelivery.objects.get(endpoint=good)
    assert (delivered.status_code, delivered.succeeded) == (204, True)
    refused = WebhookDelivery.objects.get(endpoint=bad)
    assert not refused.succeeded and "certificate" in refused.error.lower()


def test_the_address_rule():
    refused = {
        "127.0.0.1": "loopback",
        "::ffff:127.0.0.1": "IPv4-mapped loopback",
        "100.64.0.1": "carrier-grade NAT",
        "169.254.169.254": "link-local",
        "192.0.2.1": "private",  # documentation
        "0.0.0.0": "unspecified",
        "239.1.1.1": "multicast",
        "2001:db8::1": "private",
        "2002:7f00:1::1": "6to4 loopback",
        "64:ff9b::a9fe:a9fe": "NAT64 link-local",
    }
    for address, reason in refused.items():
        assert outbound.address_refusal(outbound.ipaddress.ip_address(address)) == reason
    for address in [PUBLIC, "::ffff:93.184.216.34", "2606:4700::1111", "64:ff9b::5db8:d822"]:
        assert outbound.address_refusal(outbound.ipaddress.ip_address(address)) is None


def test_a_bad_allowed_network_is_a_configuration_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8", "not-a-network"]
    with pytest.raises(ImproperlyConfigured, match="RUNNER_WEBHOOK_ALLOWED_NETWORKS"):
        outbound.allowed_networks()


# --- Endpoints per workspace ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_workspace_has_at_most_the_endpoints_allowed(admin_user, workspace, settings):
    settings.RUNNER_WEBHOOK_MAX_ENDPOINTS_PER_WORKSPACE = 2
    other = WorkspaceFactory(slug="globex")
    endpoint_for(other, "https://example.com/theirs")
    endpoint_for(other, "https://example.com/theirs-too")
    client = token_client(admin_user)
    body = {"workspace": "acme", "url": "https://example.com/hook", "event_types": ["*"]}
    assert [client.post(URL, body, format="json").status_code for _ in range(2)] == [201, 201]
    response = client.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "workspace": ["This workspace has 2 webhook endpoints, the most allowed."]
    }
    assert WebhookEndpoint.objects.filter(workspace=workspace).count() == 2

    form = staff_client().post(
        "/admin/job_events/webhookendpoint/add/",
        {"workspace": workspace.pk, "url": "https://example.com/x", "event_types": '["*"]'},
    )
    assert form.status_code == 200
    assert "the most allowed" in str(form.context["adminform"].form.errors)
    assert WebhookEndpoint.objects.filter(workspace=workspace).count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_stop_exactly_at_the_cap(settings):
    settings.RUNNER_WEBHOOK_MAX_ENDPOINTS_PER_WORKSPACE = 3
    workspace = WorkspaceFactory(slug="acme")
    barrier = threading.Barrier(6)

    def create(n: int) -> bool:
        from django.core.exceptions import ValidationError
        from django.db import connection

        barrier.wait()
        try:
            herald.webhook_endpoint_create(
                workspace=workspace, url=f"https://example.com/{n}", event_types=["*"]
            )
            return True
        except ValidationError:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(create, range(6)))
    assert outcomes.count(True) == 3
    assert WebhookEndpoint.objects.count() == 3


# --- Nothing more is kept of an internal answer -----------------------------------------------


@pytest.mark.django_db
def test_no_delivery_is_recorded_for_a_refused_registration(admin_user, workspace):
    body = {"workspace": "acme", "url": "http://127.0.0.1:1/", "event_types": ["*"]}
    assert token_client(admin_user).post(URL, body, format="json").status_code == 400
    job_in_state("completed", workspace=workspace)
    assert not PendingDelivery.objects.exists() and not WebhookDelivery.objects.exists()
