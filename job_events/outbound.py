"""Webhook requests reach the public internet only (docs/decisions/0080-security.md).

An address is refused when it is a loopback, private, link-local, carrier-grade NAT
(100.64.0.0/10), multicast, reserved, unspecified or otherwise non-global address, or an IPv6
form of one (IPv4-mapped, 6to4, NAT64), unless it lies in a network of
``RUNNER_WEBHOOK_ALLOWED_NETWORKS``.

The rule is applied twice. When an endpoint is registered, to the URL's host or to every address
its name resolves to (``validate_webhook_destination``). And on every delivery, inside the
connection itself (``webhook_post``): the name is resolved, every address is checked, and the
socket connects to a checked address; TLS then runs over that socket with the URL's host name
for SNI and the certificate check, and the Host header is the URL's. No second DNS answer is
ever asked for, so a name that changes its answer between the check and the connection (DNS
rebinding) cannot reach inside. No redirect is followed and no proxy from the environment used.
"""

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationValueError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")
# The well-known NAT64 prefix: a gateway turns 64:ff9b::a.b.c.d into a.b.c.d.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
DEFAULT_PORTS = {"http": 80, "https": 443}


class AddressRefusedError(Exception):
    """A webhook host that is, or resolves to, an address deliveries may not reach. Not an
    ``OSError``, so urllib3 passes it through unchanged instead of retrying another address."""

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        self.host, self.address, self.reason = host, address, reason
        shown = host if host == str(address) else f"{host} resolves to {address},"
        super().__init__(
            f"{shown} a {reason} address: webhooks are sent to public addresses only "
            "(RUNNER_WEBHOOK_ALLOWED_NETWORKS allows more)."
        )


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)
    except ValueError as exc:
        raise ImproperlyConfigured(f"RUNNER_WEBHOOK_ALLOWED_NETWORKS: {exc}") from exc


def allowed_networks() -> tuple[IPNetwork, ...]:
    """``RUNNER_WEBHOOK_ALLOWED_NETWORKS`` parsed (empty entries ignored)."""
    return _networks(tuple(c for c in settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS if c.strip()))


def _embedded_ipv4(address: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), with its form."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address in NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why deliveries may not reach ``address`` ("loopback", "private", ...); None if they may."""
    if any(address in network for network in allowed_networks()):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, ipv4 = embedded
        reason = address_refusal(ipv4)
        return f"{form} {reason}" if reason else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", address in CARRIER_GRADE_NAT),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-global", not address.is_global),
    )
    return next((reason for reason, refused in checks if refused), None)


def _address_check(host: str, address: IPAddress) -> None:
    reason = address_refusal(address)
    if reason:
        raise AddressRefusedError(host, address, reason)


def resolve_checked(host: str, port: int) -> list[tuple[int, int, int, str, tuple[str, int]]]:
    """Every address ``host`` resolves to, each checked (``AddressRefusedError`` on the first
    refused one, ``socket.gaierror`` when it does not resolve), as ``getaddrinfo`` returns them."""
    infos = socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        # An IPv6 sockaddr may carry a scope ("fe80::1%eth0"): the address is before the "%".
        _address_check(host, ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
    return infos  # type: ignore[return-value]


def validate_webhook_destination(url: str) -> None:
    """Refuse a URL whose host is, or now resolves to, an address deliveries may not reach. A
    name that does not resolve yet is accepted: every delivery checks it again."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return  # not a URL: the URL validator says so
    try:
        port = parts.port
    except ValueError as exc:
        raise ValidationError("Enter a port from 1 to 65535.", code="invalid_port") from exc
    host = parts.hostname
    if not host:
        return
    try:
        _address_check(host, ipaddress.ip_address(host))
        return
    except ValueError:
        pass  # a name, not an address literal
    except AddressRefusedError as exc:
        raise ValidationError(str(exc), code="address_refused") from exc
    try:
        resolve_checked(host, port or DEFAULT_PORTS.get(parts.scheme, 80))
    except (OSError, UnicodeError):
        return
    except AddressRefusedError as exc:
        raise ValidationError(str(exc), code="address_refused") from exc


def _checked_socket(conn: HTTPConnection) -> socket.socket:
    """urllib3's ``create_connection``, connecting only to checked addresses."""
    error: OSError | None = None
    try:
        for family, socktype, proto, _, sockaddr in resolve_checked(conn._dns_host, conn.port):
            sock = socket.socket(family, socktype, proto)
            try:
                sock.settimeout(conn.timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out.") from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


class CheckedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _checked_socket(self)


class CheckedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _checked_socket(self)


class CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


def webhook_post(
    url: str, *, body: bytes, headers: dict[str, str], timeout: float, read_limit: int
) -> tuple[int, bytes]:
    """POST ``body`` to ``url`` on a new connection to a checked address; the status code and
    at most ``read_limit`` bytes of the answer. Raises ``AddressRefusedError``, or urllib3's
    ``HTTPError`` for anything that went wrong on the way (a timeout, a refused connection)."""
    parts = parse_url(url)
    if not parts.host:
        raise LocationValueError(f"No host in {url!r}.")
    pool_class = (
        CheckedHTTPSConnectionPool if parts.scheme == "https" else CheckedHTTPConnectionPool
    )
    # The port always given: without one http.client would read an IPv6 literal's last group
    # as the port.
    port = parts.port or DEFAULT_PORTS[parts.scheme or "http"]
    with pool_class(
        parts.host, port, timeout=Timeout(connect=timeout, read=timeout), maxsize=1
    ) as pool:
        response = pool.urlopen(
            "POST",
            parts.request_uri,
            body=body,
            headers=headers,
            # A redirect is the endpoint's answer, not an invitation to POST elsewhere.
            redirect=False,
            retries=False,
            preload_content=False,
        )
        try:
            return response.status, response.read(read_limit)
        finally:
            response.close()
