"""Downloading a submitted URL without letting it reach inside our network (security.md, SSRF).

Every URL, the submitted one and each redirect target, goes through `check_url` (syntax:
scheme, port, no credentials) and `resolve` (every address the host resolves to must pass
the `AddressPolicy`). The HTTP client is httpcore with a network backend that can only open
sockets to the addresses `resolve` checked: the library never resolves a name itself, so a
DNS answer that changes between the check and the connection (rebinding) cannot redirect us.
TLS still runs against the URL's host name (SNI and certificate check), since httpcore takes
the name from the request while our backend picks the socket's address.

httpcore rather than httpx: httpx has no public seam for choosing the socket's address, and
it honours the `*_PROXY` environment variables by default, which would hand the lookup (and
the connection) to a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from io import BufferedWriter
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes, urljoin, urlsplit

import certifi
import httpcore

from clipo_gql.errors import (
    ForbiddenUrlError,
    PayloadTooLargeError,
    ProcessingError,
    UnsupportedMediaError,
)
from clipo_gql.ops.metrics import URL_DOWNLOAD_BYTES
from clipo_gql.settings import Settings
from clipo_gql.units import human_size
from clipo_gql.uploads import HEAD_BYTES, safe_filename, sniff_video

__all__ = [
    "AddressPolicy",
    "CheckedUrl",
    "Downloaded",
    "IPAddress",
    "Resolver",
    "check_url",
    "download",
    "filename_from_url",
    "resolve",
    "validate_url",
]

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""`(host, port) -> addresses`; raises `OSError` when the name does not resolve."""
ProgressCallback = Callable[[int, int | None], Awaitable[None]]

USER_AGENT = "clipo-gql/0.1"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PROGRESS_INTERVAL = 0.25
# One thread hop per socket read (up to 64 KiB from httpcore) would cost more than the write.
_WRITE_BYTES = 1 << 20

# RFC 3986 pchar minus the unreserved characters `quote` always keeps; `%` so existing
# escapes survive normalisation.
_PATH_SAFE = "/%:@!$&'()*+,;="
_QUERY_SAFE = _PATH_SAFE + "?"
_HOST_RE = re.compile(r"[a-z0-9_.-]+")
_IPV4_NUMBER_RE = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")
# C0 and C1 controls and DEL: urlsplit silently drops tabs and newlines, a browser would too,
# but a URL carrying them was built to confuse some parser; refusing is simpler.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_CONTENT_DISPOSITION_PARAM_RE = re.compile(
    r";\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;]*)"
)
_MEDIA_TYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")

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


# -- download -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Downloaded:
    filename: str
    """From Content-Disposition, else the URL's last path segment; safe; "video" at worst."""
    size: int
    content_type: str | None
    """The media type the server declared (`video/mp4`), without parameters."""


async def download(
    url: str,
    dest: Path,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
    policy: AddressPolicy | None = None,
    quota_left: int | None = None,
) -> Downloaded:
    """Fetch `url` into `dest` (its folder must exist), following checked redirects.

    The body goes to a temporary file beside `dest`, renamed on success; on any failure,
    cancellation included, nothing is left on disk. `on_progress(received, total)` is called
    at most ~4 times a second, and once at the end; `total` is the declared Content-Length.

    The body may be MAX_UPLOAD_BYTES, or `quota_left` (what its owner's storage quota still
    allows) when that is less.

    Raises ForbiddenUrlError (a URL or redirect refused by the rules), ProcessingError
    (network, HTTP status, timeouts), PayloadTooLargeError, UnsupportedMediaError.
    """
    if policy is None:
        policy = AddressPolicy.from_settings(settings)
    spool = _Spool(dest.with_name(f".{uuid.uuid4().hex}.download"))
    deadline = asyncio.timeout(settings.url_fetch_timeout_seconds)
    try:
        try:
            async with deadline:
                fetch = _Fetch(settings, policy, spool, on_progress, _cap(settings, quota_left))
                result = await fetch.run(url)
                await spool.close()
        except TimeoutError:
            if deadline.expired():
                limit = _duration(settings.url_fetch_timeout_seconds)
                raise ProcessingError(
                    f"The download did not finish within the {limit} limit"
                ) from None
            raise
        # A rename in the same folder: one fast syscall, and no thread that could complete
        # it after a cancellation reported failure.
        os.replace(spool.path, dest)
    except BaseException:
        spool.discard()
        raise
    return result


def _cap(settings: Settings, quota_left: int | None) -> tuple[int, str]:
    """The most bytes a download may have, and the error that says so."""
    cap = settings.max_upload_bytes
    if quota_left is not None and quota_left < cap:
        return quota_left, (
            f"The file at the URL is larger than the {human_size(quota_left)} your storage "
            "quota has left; delete videos to make room"
        )
    return cap, f"The file at the URL is larger than the {human_size(cap)} limit"


@dataclass
class _Fetch:
    settings: Settings
    policy: AddressPolicy
    spool: _Spool
    on_progress: ProgressCallback | None
    cap: tuple[int, str]

    async def run(self, url: str) -> Downloaded:
        checked = check_url(url, self.settings)
        addresses = await resolve(checked, self.settings, self.policy)
        redirects = 0
        while True:
            with _network_errors(checked, self.settings):
                async with (
                    _pool(addresses) as pool,
                    pool.stream(
                        "GET",
                        httpcore.URL(
                            scheme=checked.scheme.encode(),
                            host=checked.host.encode(),
                            port=checked.port,
                            target=checked.path_and_query.encode(),
                        ),
                        headers=[
                            (b"Host", checked.netloc.encode()),
                            (b"User-Agent", USER_AGENT.encode()),
                            (b"Accept", b"*/*"),
                            (b"Accept-Encoding", b"identity"),
                            (b"Connection", b"close"),
                        ],
                        extensions={"timeout": self._timeouts()},
                    ) as response,
                ):
                    location = _redirect_location(response)
                    if location is None:
                        return await self._receive(checked, response)
            if redirects >= self.settings.url_fetch_max_redirects:
                raise ProcessingError(
                    f"The URL redirected more than {self.settings.url_fetch_max_redirects} times"
                )
            redirects += 1
            try:
                checked = check_url(urljoin(checked.url, location), self.settings)
                addresses = await resolve(checked, self.settings, self.policy)
            except ForbiddenUrlError as exc:
                raise ForbiddenUrlError(
                    f"The URL redirects to a location that is not allowed. {exc.message}"
                ) from None

    def _timeouts(self) -> dict[str, float]:
        connect = self.settings.url_fetch_connect_timeout_seconds
        read = self.settings.url_fetch_read_timeout_seconds
        return {"connect": connect, "read": read, "write": read, "pool": connect}

    async def _receive(self, checked: CheckedUrl, response: httpcore.Response) -> Downloaded:
        status = response.status
        if not 200 <= status < 300:
            raise ProcessingError(f"The server answered {_status_text(status)}")
        cap, message = self.cap
        too_large = PayloadTooLargeError(message)
        declared = _content_length(response)
        if declared is not None and declared > cap:
            raise too_large
        content_type = _media_type(_header(response, b"content-type"))

        loop = asyncio.get_running_loop()
        last_report = loop.time()
        received = 0
        head = bytearray()
        sniffed = False
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in response.aiter_stream():
            received += len(chunk)
            if received > cap:
                raise too_large
            if not sniffed:
                head += chunk[: HEAD_BYTES - len(head)]
                # As soon as the head is in: no point fetching gigabytes of a web page.
                if len(head) >= HEAD_BYTES:
                    _require_video(head, content_type)
                    sniffed = True
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= _WRITE_BYTES:
                URL_DOWNLOAD_BYTES.inc(pending_bytes)
                await self.spool.write(pending)
                pending, pending_bytes = [], 0
            if self.on_progress is not None and loop.time() - last_report >= _PROGRESS_INTERVAL:
                last_report = loop.time()
                await self.on_progress(received, declared)
        if not sniffed:
            _require_video(head, content_type)
        URL_DOWNLOAD_BYTES.inc(pending_bytes)
        await self.spool.write(pending)
        if self.on_progress is not None:
            await self.on_progress(received, declared)
        return Downloaded(
            filename=_filename(response, checked), size=received, content_type=content_type
        )


def _require_video(head: bytearray, content_type: str | None) -> None:
    if sniff_video(bytes(head)):
        return
    if content_type and not content_type.startswith("video/"):
        raise UnsupportedMediaError(
            f"The URL did not return a video file (the server sent {content_type})"
        )
    raise UnsupportedMediaError(
        "The URL did not return a video file (its content is not a video format we accept)"
    )


# -- the pinned connection ------------------------------------------------------------------


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections to the checked addresses only, whatever host is asked for."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        self._addresses = tuple(addresses)
        self._inner = httpcore.AnyIOBackend()

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
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # all were checked: try the next one, like a resolver order
        assert failure is not None  # resolve() never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for URL downloads")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pool(addresses: Sequence[IPAddress]) -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(
        ssl_context=_ssl_context(),
        max_connections=1,
        http1=True,
        http2=False,
        retries=0,
        network_backend=_PinnedBackend(addresses),
    )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # httpcore's own default: certifi's bundle, hostname checking on.
    return ssl.create_default_context(cafile=certifi.where())


@contextlib.contextmanager
def _network_errors(checked: CheckedUrl, settings: Settings) -> Iterator[None]:
    """httpcore's exceptions as messages for `Video.error`."""
    host = checked.host
    try:
        yield
    except httpcore.ConnectTimeout:
        raise ProcessingError(f"Could not connect to {host}: the connection timed out") from None
    except httpcore.ConnectError as exc:
        raise ProcessingError(f"Could not connect to {host}: {_connect_reason(exc)}") from None
    except (httpcore.ReadTimeout, httpcore.WriteTimeout):
        idle = _duration(settings.url_fetch_read_timeout_seconds)
        raise ProcessingError(
            f"The download timed out: the server at {host} sent nothing for {idle}"
        ) from None
    except httpcore.RemoteProtocolError:
        raise ProcessingError(
            f"The server at {host} sent an invalid or incomplete HTTP response"
        ) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException):
        raise ProcessingError(f"The connection to {host} failed") from None


def _connect_reason(exc: BaseException) -> str:
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


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            # Header bytes are latin-1 by the letter of HTTP; servers put raw UTF-8 in names.
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return value.decode("latin-1")
    return None


def _redirect_location(response: httpcore.Response) -> str | None:
    if response.status not in _REDIRECT_STATUSES:
        return None
    location = _header(response, b"location")
    return location.strip() if location else None


def _content_length(response: httpcore.Response) -> int | None:
    # h11 has already refused malformed or conflicting values.
    value = _header(response, b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _media_type(value: str | None) -> str | None:
    if value is None:
        return None
    media_type = value.split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE_RE.fullmatch(media_type) else None


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def filename_from_url(url: str) -> str:
    """The URL's last path segment, percent-decoded and made safe; "video" if unusable."""
    return _first_safe_name([_last_segment(urlsplit(url).path)])


def _filename(response: httpcore.Response, checked: CheckedUrl) -> str:
    disposition = _header(response, b"content-disposition")
    candidates = list(_disposition_filenames(disposition)) if disposition else []
    candidates.append(_last_segment(checked.path_and_query.split("?", 1)[0]))
    return _first_safe_name(candidates)


def _last_segment(path: str) -> str:
    return unquote(path.rsplit("/", 1)[-1], errors="replace")


def _first_safe_name(candidates: Iterable[str]) -> str:
    for candidate in candidates:
        name = safe_filename(candidate, default="")
        if name:
            return name
    return "video"


def _disposition_filenames(disposition: str) -> Iterator[str]:
    """RFC 6266 file names, best first: `filename*` (RFC 8187), then `filename`."""
    params: dict[str, str] = {}
    for match in _CONTENT_DISPOSITION_PARAM_RE.finditer(disposition):
        value = match.group(2).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(match.group(1).lower(), value)
    extended = params.get("filename*")
    if extended is not None:
        pieces = extended.split("'", 2)
        if len(pieces) == 3 and pieces[0].lower() in ("utf-8", "iso-8859-1"):
            yield unquote_to_bytes(pieces[2]).decode(pieces[0], errors="replace")
    if "filename" in params:
        yield params["filename"]


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    return "1 second" if seconds == 1 else f"{seconds:g} seconds"


# -- the temporary file ---------------------------------------------------------------------


def _create(path: Path) -> BufferedWriter:
    # "x": the name is ours and new; never follow or reuse something already there.
    return open(path, "xb")


def _discard_when_created(opening: asyncio.Future[BufferedWriter], path: Path) -> None:
    if not opening.cancelled() and opening.exception() is None:
        with contextlib.suppress(OSError, ValueError):
            # Waits for a write still running in the executor (BufferedWriter's lock).
            opening.result().close()
    with contextlib.suppress(OSError):
        path.unlink()


class _Spool:
    """The download's temporary file, written from the default executor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._opening: asyncio.Future[BufferedWriter] | None = None

    async def _file(self) -> BufferedWriter:
        if self._opening is None:
            loop = asyncio.get_running_loop()
            self._opening = loop.run_in_executor(None, _create, self.path)
        # Shielded so a cancellation cannot lose the file the thread creates anyway:
        # discard() finds it through `_opening`.
        return await asyncio.shield(self._opening)

    async def write(self, chunks: list[bytes]) -> None:
        file = await self._file()
        if chunks:
            await asyncio.get_running_loop().run_in_executor(None, file.writelines, chunks)

    async def close(self) -> None:
        file = await self._file()
        await asyncio.get_running_loop().run_in_executor(None, file.close)

    def discard(self) -> None:
        """Close and remove the file. Synchronous: it runs while a cancellation propagates."""
        opening = self._opening
        if opening is None:
            return
        if opening.done():
            _discard_when_created(opening, self.path)
        else:
            opening.add_done_callback(functools.partial(_discard_when_created, path=self.path))
