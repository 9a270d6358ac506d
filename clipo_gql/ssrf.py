"""Which addresses an outgoing request may reach (security.md, SSRF): the one policy for
every request a stranger's URL makes us send, the URL downloader (fetch.py) and the webhook
sender (webhooks/sender.py) alike.

Every URL goes through `check_url` (syntax: scheme, port, no credentials) and `resolve`
(every address the host resolves to must pass the `AddressPolicy`). The HTTP client is
httpcore with a network backend that can only open sockets to the addresses `resolve`
checked (`pinned_pool`): the library never resolves a name itself, so a DNS answer that
changes between the check and the connection (rebinding) cannot redirect us. TLS still runs
against the URL's host name (SNI and certificate check), since httpcore takes the name from
the request while our backend picks the socket's address.

httpcore rather than httpx: httpx has no public seam for choosing the socket's address, and
it honours the `*_PROXY` environment variables by default, which would hand the lookup (and
the connection) to a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any
from urllib.parse import quote, urlsplit

import certifi
import httpcore

from clipo_gql.errors import ForbiddenUrlError
from clipo_gql.settings import Settings

__all__ = [
    "AddressPolicy",
    "CheckedUrl",
    "IPAddress",
    "PinnedBackend",
    "Resolver",
    "check_url",
    "connect_reason",
    "header",
    "pinned_pool",
    "resolve",
    "status_text",
    "validate_url",
]

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""`(host, port) -> addresses`; raises `OSError` when the name does not resolve."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 pchar minus the unreserved characters `quote` always keeps; `%` so existing
# escapes survive normalisation.
_PATH_SAFE = "/%:@!$&'()*+,;="
_QUERY_SAFE = _PATH_SAFE + "?"
_HOST_RE = re.compile(r"[a-z0-9_.-]+")
_IPV4_NUMBER_RE = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")
# C0 and C1 controls and DEL: urlsplit silently drops tabs and newlines, a browser would too,
# but a URL carrying them was built to confuse some parser; refusing is simpler.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Addresses nobody needs to fetch a video from, even with URL_FETCH_ALLOW_PRIVATE: the cloud
# metadata services hand out credentials, and the others are not a host at all.
_METADATA = frozenset(
    ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_SHARED = IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_PRIVATE = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
    IPv6Network("fc00::/7"),
)
_NAT64 = IPv6Network("64:ff9b::/96")
_BROADCAST = IPv4Address("255.255.255.255")


# -- address policy -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Refusal:
    description: str
    """`a loopback address (127.0.0.1)`: fits "resolves to ..." and "points to ..."."""
    always: bool
    """Refused even when private addresses are allowed."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which IP addresses a URL fetch may connect to, and how host names are resolved.

    The default (`from_settings`) allows globally routable addresses only; `allow_private`
    lifts that for development, except for the cloud metadata addresses, unspecified,
    broadcast and multicast addresses, which are never a server to download from.
    When a policy is passed to `resolve`/`download`, it alone decides: settings'
    `url_fetch_allow_private` is not consulted.
    """

    allow_private: bool = False
    trusted: frozenset[IPAddress] = frozenset()
    """Addresses allowed whatever they are: lets tests stand a loopback server in for a
    public host while every other private address stays refused."""
    resolver: Resolver | None = None
    """Replaces the system resolver (tests: `public.test` -> 127.0.0.1)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(allow_private=settings.url_fetch_allow_private)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` may not be contacted (`a private address (10.0.0.1)`), None if it may."""
        if ip in self.trusted:
            return None
        refused = _refusal(ip)
        if refused is None or (self.allow_private and not refused.always):
            return None
        return refused.description

    def allows(self, ip: IPAddress) -> bool:
        return self.refusal(ip) is None

    __call__ = allows


def _refusal(ip: IPAddress) -> _Refusal | None:
    if isinstance(ip, IPv6Address):
        # These forms reach an IPv4 host: judge the host they reach. Python 3.11 calls
        # ::ffff:127.0.0.1 and 64:ff9b::7f00:1 "global".
        if ip.ipv4_mapped is not None:
            return _embedded(ip, "an IPv4-mapped", ip.ipv4_mapped)
        if ip in _NAT64:
            return _embedded(ip, "a NAT64", IPv4Address(int(ip) & 0xFFFFFFFF))
        # 6to4 and Teredo tunnel to the embedded IPv4 address(es): both ends must pass.
        if ip.sixtofour is not None:
            return _own(ip) or _embedded(ip, "a 6to4", ip.sixtofour)
        if ip.teredo is not None:
            server, client = ip.teredo
            return (
                _own(ip) or _embedded(ip, "a Teredo", server) or _embedded(ip, "a Teredo", client)
            )
    return _own(ip)


def _embedded(outer: IPv6Address, form: str, inner: IPv4Address) -> _Refusal | None:
    refused = _own(inner)
    if refused is None:
        return None
    return _Refusal(f"{form} form of {refused.description} ({outer})", refused.always)


def _own(ip: IPAddress) -> _Refusal | None:
    kind = _never_kind(ip)
    if kind is not None:
        return _Refusal(f"{kind} ({ip})", always=True)
    kind = _non_public_kind(ip)
    if kind is not None:
        return _Refusal(f"{kind} ({ip})", always=False)
    return None


def _never_kind(ip: IPAddress) -> str | None:
    if ip in _METADATA:
        return "the cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip == _BROADCAST:
        return "the broadcast address"
    return None


def _non_public_kind(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, IPv4Address) and ip in _SHARED:
        return "a carrier-grade NAT address"
    if any(ip in network for network in _PRIVATE):
        return "a private address"
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "an address that is not publicly routable"
    if isinstance(ip, IPv6Address) and ip.is_site_local:  # deprecated, yet "global" in 3.11
        return "an address that is not publicly routable"
    return None


# -- URL checks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    """Normalised: lower-case scheme and host, IPv4 in dotted form, no default port, no
    fragment, path and query percent-encoded."""
    scheme: str
    host: str
    """The host name (IDNA-encoded), or an IP address without brackets."""
    port: int
    path_and_query: str

    @property
    def netloc(self) -> str:
        """`host[:port]` as it goes into a URL and the Host header."""
        return _netloc(self.scheme, self.host, self.port)

    @property
    def request_url(self) -> httpcore.URL:
        """The URL as httpcore takes it (the host for TLS; the socket's address is ours)."""
        return httpcore.URL(
            scheme=self.scheme.encode(),
            host=self.host.encode(),
            port=self.port,
            target=self.path_and_query.encode(),
        )

    @property
    def ip(self) -> IPAddress | None:
        """The host when it is an IP address literal."""
        try:
            return ip_address(self.host)
        except ValueError:
            return None


def check_url(url: str, settings: Settings) -> CheckedUrl:
    """Syntax rules only, no DNS: http(s), length, a host, no credentials, an allowed port."""
    # Leading and trailing blanks come with copy and paste; inside, they are encoded below.
    url = url.strip(" ")
    if not url:
        raise ForbiddenUrlError("The URL is empty")
    if len(url) > settings.url_max_length:
        raise ForbiddenUrlError(f"The URL is longer than {settings.url_max_length} characters")
    if _CONTROL_RE.search(url):
        raise ForbiddenUrlError("The URL contains control characters")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800"): it cannot be percent-encoded or sent.
        raise ForbiddenUrlError("The URL contains characters that are not valid text") from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ForbiddenUrlError("The URL is not valid (check the host name and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ForbiddenUrlError("Only http and https URLs are accepted")
    if "@" in parts.netloc:
        raise ForbiddenUrlError("URLs with a user name or password are not accepted")
    # A browser reads `\` as `/` in the authority, urlsplit does not: refuse the difference.
    if "\\" in parts.netloc:
        raise ForbiddenUrlError("The host name in the URL is not valid")
    if not parts.hostname:
        raise ForbiddenUrlError("The URL has no host name")
    host = _normalise_host(parts.hostname)
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    if port not in settings.allowed_ports:
        allowed = ", ".join(str(p) for p in sorted(settings.allowed_ports))
        raise ForbiddenUrlError(f"Port {port} is not allowed (allowed ports: {allowed})")
    path_and_query = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path_and_query += "?" + quote(parts.query, safe=_QUERY_SAFE)
    if not path_and_query.startswith("/"):
        path_and_query = "/" + path_and_query
    normalised = f"{scheme}://{_netloc(scheme, host, port)}{path_and_query}"
    if len(normalised) > settings.url_max_length:
        raise ForbiddenUrlError(f"The URL is longer than {settings.url_max_length} characters")
    return CheckedUrl(
        url=normalised, scheme=scheme, host=host, port=port, path_and_query=path_and_query
    )


def _netloc(scheme: str, host: str, port: int) -> str:
    bracketed = f"[{host}]" if ":" in host else host
    return bracketed if port == _DEFAULT_PORTS[scheme] else f"{bracketed}:{port}"


def _normalise_host(hostname: str) -> str:
    if "%" in hostname:
        # A percent-encoded host, or an IPv6 zone id (`%eth0`: an interface of ours).
        raise ForbiddenUrlError("The host name in the URL is not valid")
    if ":" in hostname:
        try:
            return str(IPv6Address(hostname))
        except ValueError:
            raise ForbiddenUrlError("The IPv6 address in the URL is not valid") from None
    try:
        host = (
            hostname.encode("idna").decode("ascii").lower() if not hostname.isascii() else hostname
        )
    except UnicodeError:
        raise ForbiddenUrlError("The host name in the URL is not valid") from None
    if not _HOST_RE.fullmatch(host) or host.startswith(".") or ".." in host:
        raise ForbiddenUrlError("The host name in the URL is not valid")
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if _IPV4_NUMBER_RE.fullmatch(labels[-1]):
        # Browsers and getaddrinfo read 0x7f000001, 2130706433, 0177.0.0.1 and 127.1 as
        # 127.0.0.1 (WHATWG "ends in a number"): use the address they mean.
        ipv4 = _whatwg_ipv4(labels)
        if ipv4 is None:
            raise ForbiddenUrlError("The IP address in the URL is not valid")
        return str(ipv4)
    return host


def _whatwg_ipv4(labels: list[str]) -> IPv4Address | None:
    if len(labels) > 4:
        return None
    numbers: list[int] = []
    for label in labels:
        if not _IPV4_NUMBER_RE.fullmatch(label):
            return None
        if label[:2].lower() == "0x":
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if any(c in "89" for c in label):
                return None
            numbers.append(int(label, 8))
        else:
            numbers.append(int(label))
    *first, last = numbers
    if any(n > 255 for n in first) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(first))
    return IPv4Address(value)


async def resolve(
    checked: CheckedUrl, settings: Settings, policy: AddressPolicy | None = None
) -> list[IPAddress]:
    """The host's addresses, all allowed by `policy` (default: from settings).

    Raises `ForbiddenUrlError` if the host does not resolve or ANY address is refused: a
    name that also points inside our network is not one to connect to by luck of ordering.
    """
    if policy is None:
        policy = AddressPolicy.from_settings(settings)
    literal = checked.ip
    addresses = [literal] if literal is not None else await _lookup(checked, settings, policy)
    for ip in addresses:
        reason = policy.refusal(ip)
        if reason is None:
            continue
        if literal is not None:
            raise ForbiddenUrlError(f"The URL points to {reason}, which is not allowed")
        raise ForbiddenUrlError(f"{checked.host} resolves to {reason}, which is not allowed")
    return addresses


async def validate_url(
    url: str, settings: Settings, policy: AddressPolicy | None = None
) -> CheckedUrl:
    """`check_url` and `resolve`: what `submitVideo` checks before creating a video."""
    checked = check_url(url, settings)
    await resolve(checked, settings, policy)
    return checked


async def _lookup(
    checked: CheckedUrl, settings: Settings, policy: AddressPolicy
) -> list[IPAddress]:
    resolver = policy.resolver or _system_resolver
    try:
        async with asyncio.timeout(settings.url_fetch_connect_timeout_seconds):
            found = await resolver(checked.host, checked.port)
    except TimeoutError:  # before OSError, its base class
        raise ForbiddenUrlError(
            f"{checked.host} could not be resolved (the DNS lookup timed out)"
        ) from None
    except (OSError, UnicodeError):
        found = []
    addresses = list(dict.fromkeys(found))
    if not addresses:
        raise ForbiddenUrlError(f"{checked.host} could not be resolved")
    return addresses


async def _system_resolver(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # sockaddr[0] is a str for AF_INET/AF_INET6, the only families asked for by a TCP lookup.
    return [ip_address(str(info[4][0])) for info in infos]


# -- the pinned connection ------------------------------------------------------------------


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections to the checked addresses only, whatever host is asked for."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        self._addresses = tuple(addresses)
        self._inner = httpcore.AnyIOBackend()
        self._opened: weakref.WeakSet[httpcore.AsyncNetworkStream] = weakref.WeakSet()

    async def close_all(self) -> None:
        """Close every connection still open, also one a cancelled request left behind
        (httpcore does not always close a connection whose request was cancelled)."""
        for stream in list(self._opened):
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for ip in self._addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # all were checked: try the next one, like a resolver order
                continue
            self._opened.add(stream)
            return stream
        assert failure is not None  # resolve() never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for outgoing requests")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pinned_pool(
    addresses: Sequence[IPAddress],
    max_connections: int = 1,
    keepalive_expiry: float | None = None,
    backend: PinnedBackend | None = None,
) -> httpcore.AsyncConnectionPool:
    """A connection pool that connects to `addresses` (from `resolve`) only."""
    return httpcore.AsyncConnectionPool(
        ssl_context=_ssl_context(),
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
        http1=True,
        http2=False,
        retries=0,
        network_backend=backend or PinnedBackend(addresses),
    )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # httpcore's own default: certifi's bundle, hostname checking on.
    return ssl.create_default_context(cafile=certifi.where())


def connect_reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"its certificate was refused ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return "the secure connection (TLS) failed"
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
        # httpcore sometimes raises its own error inside the `except`, not `from` it.
        cause = cause.__cause__ or cause.__context__
    return "the connection failed"


# -- responses ------------------------------------------------------------------------------


def header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            # Header bytes are latin-1 by the letter of HTTP; servers put raw UTF-8 in names.
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return value.decode("latin-1")
    return None


def status_text(status: int) -> str:
    """`404 Not Found`, for messages about what a server answered."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
