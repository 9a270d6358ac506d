"""URL downloads: the SSRF rules, redirects, limits and timeouts, against a local server.

The server is a hand-written HTTP/1.1 responder on asyncio streams, because several cases
need a misbehaving server (a lying Content-Length, an endless body, a stall mid-body).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest

from clipo_gql import fetch, ssrf
from clipo_gql.errors import (
    ForbiddenUrlError,
    PayloadTooLargeError,
    ProcessingError,
    UnsupportedMediaError,
)
from clipo_gql.fetch import download
from clipo_gql.settings import Settings
from clipo_gql.ssrf import (
    AddressPolicy,
    CheckedUrl,
    IPAddress,
    check_url,
    resolve,
    validate_url,
)
from tests.clips import FFMPEG

CAP = 4 * 1024 * 1024
LOOPBACK = IPv4Address("127.0.0.1")

# -- a tiny HTTP/1.1 server ------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


Handler = Callable[[Seen, asyncio.StreamWriter], Awaitable[None]]


class HttpServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[Seen] = []
        self.connections = 0
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            target = request_line.split(" ")[1]
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            seen = Seen(target, headers)
            self.requests.append(seen)
            await self.routes.get(target.split("?")[0], _not_found)(seen, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up, as the cap and timeout tests make it do
        finally:
            writer.close()
            self._tasks.discard(task)


def head_bytes(status: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("utf-8")


def respond(
    body: bytes, status: str = "200 OK", headers: Sequence[tuple[str, str]] = ()
) -> Handler:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes(status, [*headers, ("Content-Length", str(len(body)))]) + body)

    return handler


def redirect(location: str, status: str = "302 Found") -> Handler:
    return respond(b"", status, [("Location", location)])


async def _not_found(seen: Seen, writer: asyncio.StreamWriter) -> None:
    await respond(b"<h1>nope</h1>", "404 Not Found", [("Content-Type", "text/html")])(seen, writer)


async def _forever() -> None:
    await asyncio.sleep(3600)


def routes(video: bytes, port: int) -> dict[str, Handler]:
    mp4 = [("Content-Type", "video/mp4")]

    def disposition(value: str) -> Handler:
        return respond(video, headers=[*mp4, ("Content-Disposition", value)])

    async def declared_too_large(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes("200 OK", [("Content-Length", str(CAP + 1))]) + video[:1000])
        await writer.drain()
        await _forever()

    async def endless(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes("200 OK", [*mp4, ("Connection", "close")]) + video)
        while True:
            writer.write(bytes(65536))
            await writer.drain()

    async def endless_chunked(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes("200 OK", [*mp4, ("Transfer-Encoding", "chunked")]))
        writer.write(b"%x\r\n%b\r\n" % (len(video), video))
        while True:
            writer.write(b"10000\r\n" + bytes(65536) + b"\r\n")
            await writer.drain()

    async def lying(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes("200 OK", [*mp4, ("Content-Length", "1000")]))
        while True:
            writer.write(video)
            await writer.drain()

    async def truncated(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes("200 OK", [*mp4, ("Content-Length", str(len(video) + 1000))]))
        writer.write(video)

    async def stall_headers(seen: Seen, writer: asyncio.StreamWriter) -> None:
        await _forever()

    async def stall_body(seen: Seen, writer: asyncio.StreamWriter) -> None:
        big = video + bytes(3 * 1024 * 1024)
        writer.write(head_bytes("200 OK", [*mp4, ("Content-Length", str(len(big)))]))
        writer.write(big[: 3 * 1024 * 1024 // 2])
        await writer.drain()
        await _forever()

    async def trickle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes("200 OK", mp4) + video[:1000])
        while True:
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"\0")

    async def slow(seen: Seen, writer: asyncio.StreamWriter) -> None:
        body = video + bytes(1024 * 1024 - len(video))
        writer.write(head_bytes("200 OK", [*mp4, ("Content-Length", str(len(body)))]))
        for start in range(0, len(body), len(body) // 16):
            writer.write(body[start : start + len(body) // 16])
            await writer.drain()
            await asyncio.sleep(0.07)

    return {
        "/": respond(video, headers=mp4),
        "/video.mp4": respond(video, headers=mp4),
        "/files/holiday%20clip.mp4": respond(video, headers=mp4),
        "/quoted": disposition('attachment; filename="my \\"best\\" clip.mp4"'),
        "/extended": disposition(
            "attachment; filename=\"fallback.mp4\"; filename*=UTF-8''%C3%A9t%C3%A9%20clip.mp4"
        ),
        "/traversal": disposition('attachment; filename="../../etc/passwd.mp4"'),
        "/r1": redirect(f"http://public.test:{port}/r2", "301 Moved Permanently"),
        "/r2": redirect("r3", "307 Temporary Redirect"),
        "/r3": redirect("/files/holiday%20clip.mp4", "308 Permanent Redirect"),
        "/loop": redirect("/loop"),
        "/to-private": redirect(f"http://127.0.0.2:{port}/video.mp4"),
        "/to-metadata": redirect("http://169.254.169.254/latest/meta-data"),
        "/to-file": redirect("file:///etc/passwd"),
        "/to-port": redirect("http://public.test:22/"),
        "/to-intranet": redirect(f"http://intranet.test:{port}/video.mp4"),
        "/fake.mp4": respond(b"not a video, honest" * 30, headers=mp4),
        "/truncated": truncated,
        "/text": respond(b"<html>not a video</html>" * 40, headers=[("Content-Type", "text/html")]),
        "/declared-too-large": declared_too_large,
        "/endless": endless,
        "/endless-chunked": endless_chunked,
        "/lying": lying,
        "/stall-headers": stall_headers,
        "/stall-body": stall_body,
        "/trickle": trickle,
        "/slow": slow,
    }


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fetch") / "small.mp4"
    subprocess.run(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc=size=160x120:rate=10:duration=1",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture
async def server(video: bytes) -> AsyncIterator[HttpServer]:
    running = HttpServer({})
    await running.start()
    running.routes.update(routes(video, running.port))
    yield running
    await running.stop()


def configure(base: Settings, port: int, **update: object) -> Settings:
    values = {
        **base.model_dump(),
        "url_fetch_allow_private": True,
        "url_fetch_allowed_ports": f"{port},80,443",
        "max_upload_bytes": CAP,
        "url_fetch_connect_timeout_seconds": 1,
        "url_fetch_read_timeout_seconds": 0.5,
        "url_fetch_timeout_seconds": 5,
        **update,
    }
    # model_validate, not model_copy: allowed_ports is derived (and cached) from the string.
    return Settings.model_validate(values)


@pytest.fixture
def lax(settings: Settings, server: HttpServer) -> Settings:
    """Private addresses allowed: the local server stands for the internet."""
    return configure(settings, server.port)


@pytest.fixture
def strict(settings: Settings, server: HttpServer) -> Settings:
    return configure(settings, server.port, url_fetch_allow_private=False)


@dataclass
class FakeDns:
    table: dict[str, list[str]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip_address(a) for a in self.table[host]]


def public_policy(dns: FakeDns | None = None) -> AddressPolicy:
    """The default rules, except that the test server's 127.0.0.1 counts as public."""
    return AddressPolicy(
        trusted=frozenset({LOOPBACK}),
        resolver=dns or FakeDns({"public.test": ["127.0.0.1"], "intranet.test": ["10.0.0.7"]}),
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the address policy ----------------------------------------------------------------------

POLICY_TABLE = [
    # address, allowed by default, allowed with URL_FETCH_ALLOW_PRIVATE
    ("8.8.8.8", True, True),
    ("93.184.216.34", True, True),
    ("2606:4700:4700::1111", True, True),
    ("::ffff:8.8.8.8", True, True),
    ("64:ff9b::808:808", True, True),  # NAT64 of a public address: DNS64 networks need it
    ("2002:808:808::", True, True),
    ("127.0.0.1", False, True),
    ("127.8.9.10", False, True),
    ("10.1.2.3", False, True),
    ("172.16.0.1", False, True),
    ("192.168.1.1", False, True),
    ("100.64.0.1", False, True),
    ("100.127.255.254", False, True),
    ("169.254.1.1", False, True),
    ("192.0.2.1", False, True),
    ("198.18.0.1", False, True),
    ("240.0.0.1", False, True),
    ("::1", False, True),
    ("fe80::1", False, True),
    ("fc00::1", False, True),
    ("fd12:3456::1", False, True),
    ("fec0::1", False, True),  # deprecated site-local
    ("100::1", False, True),  # discard-only
    ("2001:db8::1", False, True),
    ("::7f00:1", False, True),  # deprecated IPv4-compatible form
    ("::ffff:127.0.0.1", False, True),
    ("::ffff:10.0.0.1", False, True),
    ("64:ff9b::7f00:1", False, True),
    ("64:ff9b:1::a00:1", False, True),  # local-use NAT64
    ("2002:7f00:1::", False, True),
    ("2002:a00:1::", False, True),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False, True),  # Teredo
    # never, whatever the setting
    ("169.254.169.254", False, False),
    ("169.254.170.2", False, False),
    ("fd00:ec2::254", False, False),
    ("::ffff:169.254.169.254", False, False),
    ("64:ff9b::a9fe:a9fe", False, False),
    ("2002:a9fe:a9fe::", False, False),
    ("0.0.0.0", False, False),
    ("::", False, False),
    ("255.255.255.255", False, False),
    ("224.0.0.1", False, False),
    ("239.255.255.250", False, False),
    ("ff02::1", False, False),
    ("::ffff:224.0.0.1", False, False),
]


@pytest.mark.parametrize(("address", "by_default", "when_private_allowed"), POLICY_TABLE)
def test_address_policy(address: str, by_default: bool, when_private_allowed: bool) -> None:
    ip = ip_address(address)
    assert AddressPolicy().allows(ip) is by_default
    assert AddressPolicy(allow_private=True).allows(ip) is when_private_allowed
    assert (AddressPolicy().refusal(ip) is None) is by_default


def test_policy_reasons_and_trusted_addresses() -> None:
    policy = AddressPolicy(trusted=frozenset({ip_address("10.0.0.7")}))
    assert policy(ip_address("10.0.0.7"))
    assert not policy(ip_address("10.0.0.8"))
    assert policy.refusal(ip_address("10.0.0.8")) == "a private address (10.0.0.8)"
    assert policy.refusal(ip_address("64:ff9b::a9fe:a9fe")) == (
        "a NAT64 form of the cloud metadata address (169.254.169.254) (64:ff9b::a9fe:a9fe)"
    )


def test_policy_from_settings(settings: Settings) -> None:
    assert AddressPolicy.from_settings(settings) == AddressPolicy(allow_private=False)
    private = Settings.model_validate({**settings.model_dump(), "url_fetch_allow_private": 1})
    assert AddressPolicy.from_settings(private).allow_private


# -- URL syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "HTTP://Example.COM/a b/ü?q=x y#frag",
            CheckedUrl("http://example.com/a%20b/%C3%BC?q=x%20y", "http", "example.com", 80,
                       "/a%20b/%C3%BC?q=x%20y"),
        ),
        ("https://example.com:443", CheckedUrl("https://example.com/", "https", "example.com",
                                               443, "/")),
        ("http://example.com:8080/x%2Fy", CheckedUrl("http://example.com:8080/x%2Fy", "http",
                                                     "example.com", 8080, "/x%2Fy")),
        ("http://[::1]:8443/v", CheckedUrl("http://[::1]:8443/v", "http", "::1", 8443, "/v")),
        ("http://bücher.example/", CheckedUrl("http://xn--bcher-kva.example/", "http",
                                              "xn--bcher-kva.example", 80, "/")),
        ("http://0x7f.1/", CheckedUrl("http://127.0.0.1/", "http", "127.0.0.1", 80, "/")),
        ("  http://example.com/v.mp4 ", CheckedUrl("http://example.com/v.mp4", "http",
                                                   "example.com", 80, "/v.mp4")),
    ],
)  # fmt: skip
def test_check_url_normalises(url: str, expected: CheckedUrl, settings: Settings) -> None:
    assert check_url(url, settings) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "The URL is empty"),
        ("http://exa\tmple.com/", "control characters"),
        ("http://example.com/\n", "control characters"),
        ("http:///etc/passwd", "no host name"),
        ("http://exa_mple..com/", "host name in the URL is not valid"),
        ("http://%31%32%37.0.0.1/", "host name in the URL is not valid"),
        ("http://[fe80::1%25eth0]/", "host name in the URL is not valid"),
        ("http://1.2.3.4.5/", "IP address in the URL is not valid"),
        ("http://256.1.1.1/", "IP address in the URL is not valid"),
        ("http://example.123/", "IP address in the URL is not valid"),
        ("http://example.com:99999/", "not valid"),
        ("http://example.com:8o/", "not valid"),
        ("http://[::1/", "not valid"),
        ("javascript:alert(1)", "Only http and https URLs are accepted"),
        ("//example.com/", "Only http and https URLs are accepted"),
        ("http://example.com\\@evil.test/", "user name or password"),
    ],
)
def test_check_url_refuses(url: str, message: str, settings: Settings) -> None:
    with pytest.raises(ForbiddenUrlError, match=message):
        check_url(url, settings)


# -- SSRF: refused before any connection ------------------------------------------------------

SSRF_TABLE = [
    ("http://127.0.0.1:{port}/", r"points to a loopback address \(127\.0\.0\.1\)"),
    ("http://[::1]:{port}/", r"points to a loopback address \(::1\)"),
    ("http://169.254.169.254/latest/meta-data", r"the cloud metadata address"),
    ("http://0x7f000001:{port}/", r"a loopback address \(127\.0\.0\.1\)"),
    ("http://2130706433:{port}/", r"a loopback address \(127\.0\.0\.1\)"),
    ("http://0177.0.0.1:{port}/", r"a loopback address \(127\.0\.0\.1\)"),
    ("http://127.1:{port}/", r"a loopback address \(127\.0\.0\.1\)"),
    ("http://[::ffff:127.0.0.1]:{port}/", r"an IPv4-mapped form of a loopback address"),
    ("http://10.0.0.1:{port}/", r"a private address \(10\.0\.0\.1\)"),
    ("http://100.64.0.1/", r"a carrier-grade NAT address"),
    ("http://[::ffff:169.254.169.254]/", r"IPv4-mapped form of the cloud metadata address"),
    ("http://[64:ff9b::a9fe:a9fe]/", r"NAT64 form of the cloud metadata address"),
    ("http://[2002:7f00:1::]/", r"6to4 form of a loopback address"),
    ("http://localhost:{port}/", r"^localhost resolves to a loopback address"),
    ("file:///etc/passwd", r"^Only http and https URLs are accepted$"),
    ("gopher://127.0.0.1:{port}/", r"^Only http and https URLs are accepted$"),
    ("ftp://example.com/video.mp4", r"^Only http and https URLs are accepted$"),
    ("http://user:pass@127.0.0.1:{port}/", r"user name or password"),
    ("http://user@example.com/", r"user name or password"),
    ("http://example.com:22/", r"^Port 22 is not allowed"),
    ("http://127.0.0.1:8443/", r"^Port 8443 is not allowed \(allowed ports: "),
    ("http://example.com/" + "a" * 2100, r"longer than 2048 characters"),
]


@pytest.mark.parametrize(("template", "message"), SSRF_TABLE)
async def test_ssrf_refused_without_connecting(
    template: str, message: str, server: HttpServer, strict: Settings, tmp_path: Path
) -> None:
    url = template.format(port=server.port)
    with pytest.raises(ForbiddenUrlError, match=message):
        await validate_url(url, strict)
    with pytest.raises(ForbiddenUrlError, match=message):
        await download(url, tmp_path / "out.mp4", strict)
    assert server.connections == 0
    assert leftovers(tmp_path) == []


async def test_allow_private_lifts_addresses_only(lax: Settings, server: HttpServer) -> None:
    await validate_url(f"http://127.0.0.1:{server.port}/", lax)
    await validate_url(f"http://[::ffff:10.0.0.1]:{server.port}/", lax)
    for url, message in [
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("gopher://127.0.0.1/", "Only http and https"),
        ("http://127.0.0.1:22/", "Port 22 is not allowed"),
    ]:
        with pytest.raises(ForbiddenUrlError, match=message):
            await validate_url(url, lax)


@pytest.mark.parametrize(
    ("host", "answer", "message"),
    [
        ("intranet.test", ["10.0.0.7"], r"^intranet\.test resolves to a private address \(10"),
        # One public answer does not excuse a private one: the client might use either.
        ("mixed.test", ["93.184.216.34", "127.0.0.1"], r"^mixed\.test resolves to a loopback"),
        ("meta.test", ["::ffff:169.254.169.254"], r"^meta\.test resolves to an IPv4-mapped"),
        ("nowhere.test", None, r"^nowhere\.test could not be resolved$"),
    ],
)
async def test_resolved_addresses_are_checked(
    host: str,
    answer: list[str] | None,
    message: str,
    server: HttpServer,
    strict: Settings,
    tmp_path: Path,
) -> None:
    dns = FakeDns({host: answer} if answer else {})
    policy = AddressPolicy(resolver=dns)
    url = f"http://{host}:{server.port}/video.mp4"
    with pytest.raises(ForbiddenUrlError, match=message):
        await validate_url(url, strict, policy)
    with pytest.raises(ForbiddenUrlError, match=message):
        await download(url, tmp_path / "out.mp4", strict, policy=policy)
    assert server.connections == 0
    assert leftovers(tmp_path) == []


async def test_resolve_times_out(strict: Settings) -> None:
    async def hanging(host: str, port: int) -> list[IPAddress]:
        await _forever()
        raise AssertionError

    checked = check_url("http://slow.test/", strict)
    with pytest.raises(ForbiddenUrlError, match="could not be resolved .the DNS lookup timed out"):
        await resolve(checked, strict, AddressPolicy(resolver=hanging))


async def test_system_resolver(strict: Settings) -> None:
    checked = check_url("http://localhost/", strict)
    assert LOOPBACK in await resolve(checked, strict, AddressPolicy(allow_private=True))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/to-private", r"a loopback address \(127\.0\.0\.2\)"),
        ("/to-metadata", r"the cloud metadata address"),
        ("/to-file", r"Only http and https URLs are accepted"),
        ("/to-port", r"Port 22 is not allowed"),
        ("/to-intranet", r"intranet\.test resolves to a private address \(10\.0\.0\.7\)"),
    ],
)
async def test_redirect_target_is_checked(
    path: str, message: str, server: HttpServer, strict: Settings, tmp_path: Path
) -> None:
    with pytest.raises(
        ForbiddenUrlError, match=f"redirects to a location that is not allowed. .*{message}"
    ):
        await download(
            f"http://public.test:{server.port}{path}", tmp_path / "out.mp4", strict,
            policy=public_policy(),
        )  # fmt: skip
    assert server.paths == [path]
    assert leftovers(tmp_path) == []


# -- downloads -------------------------------------------------------------------------------


async def test_download(video: bytes, server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    got = await download(f"http://127.0.0.1:{server.port}/video.mp4", dest, lax)
    assert got == fetch.Downloaded(filename="video.mp4", size=len(video), content_type="video/mp4")
    assert dest.read_bytes() == video
    assert leftovers(tmp_path) == ["out.mp4"]
    [seen] = server.requests
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["user-agent"] == "clipo-gql/0.1"
    assert seen.headers["accept-encoding"] == "identity"


async def test_redirect_chain_with_checked_hops(
    video: bytes, server: HttpServer, strict: Settings, tmp_path: Path
) -> None:
    dns = FakeDns({"public.test": ["127.0.0.1"]})
    dest = tmp_path / "out.mp4"
    got = await download(
        f"http://127.0.0.1:{server.port}/r1", dest, strict, policy=public_policy(dns)
    )
    assert got.filename == "holiday clip.mp4"  # the last URL's name
    assert dest.read_bytes() == video
    assert server.paths == ["/r1", "/r2", "/r3", "/files/holiday%20clip.mp4"]
    assert [s.headers["host"] for s in server.requests[1:]] == [f"public.test:{server.port}"] * 3
    # One lookup per hop on public.test, none by the HTTP library (the system resolver does
    # not know public.test: the connections went to the address we checked).
    assert dns.calls == ["public.test"] * 3


async def test_connects_to_the_checked_address_only(
    server: HttpServer, strict: Settings, tmp_path: Path
) -> None:
    class Rebinding(FakeDns):
        async def __call__(self, host: str, port: int) -> list[IPAddress]:
            self.calls.append(host)
            return [LOOPBACK] if len(self.calls) == 1 else [ip_address("10.0.0.1")]

    dns = Rebinding({})
    await download(
        f"http://public.test:{server.port}/video.mp4", tmp_path / "out.mp4", strict,
        policy=public_policy(dns),
    )  # fmt: skip
    assert dns.calls == ["public.test"]
    assert server.connections == 1


async def test_falls_back_to_the_next_checked_address(
    server: HttpServer, strict: Settings, tmp_path: Path
) -> None:
    dns = FakeDns({"public.test": ["127.0.0.2", "127.0.0.1"]})  # nothing listens on .2
    policy = AddressPolicy(trusted=frozenset({LOOPBACK, ip_address("127.0.0.2")}), resolver=dns)
    got = await download(
        f"http://public.test:{server.port}/video.mp4", tmp_path / "out.mp4", strict, policy=policy
    )
    assert got.filename == "video.mp4"


async def test_too_many_redirects(server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    with pytest.raises(ProcessingError, match="^The URL redirected more than 5 times$"):
        await download(f"http://127.0.0.1:{server.port}/loop", tmp_path / "out.mp4", lax)
    assert len(server.requests) == 6
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("path", "filename"),
    [
        ("/quoted", 'my "best" clip.mp4'),
        ("/extended", "été clip.mp4"),
        ("/traversal", "passwd.mp4"),
        ("/files/holiday%20clip.mp4", "holiday clip.mp4"),
        ("/", "video"),
    ],
)
async def test_filename(
    path: str, filename: str, server: HttpServer, lax: Settings, tmp_path: Path
) -> None:
    got = await download(f"http://127.0.0.1:{server.port}{path}", tmp_path / "out.mp4", lax)
    assert got.filename == filename


async def test_http_error_status(server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    with pytest.raises(ProcessingError, match="^The server answered 404 Not Found$"):
        await download(f"http://127.0.0.1:{server.port}/missing", tmp_path / "out.mp4", lax)
    assert leftovers(tmp_path) == []


async def test_not_a_video(server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    with pytest.raises(
        UnsupportedMediaError,
        match=r"^The URL did not return a video file \(the server sent text/html\)$",
    ):
        await download(f"http://127.0.0.1:{server.port}/text", tmp_path / "out.mp4", lax)
    assert leftovers(tmp_path) == []


async def test_not_a_video_despite_its_type(
    server: HttpServer, lax: Settings, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedMediaError, match=r"\(its content is not a video format"):
        await download(f"http://127.0.0.1:{server.port}/fake.mp4", tmp_path / "out.mp4", lax)
    assert leftovers(tmp_path) == []


async def test_truncated_body(server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    with pytest.raises(
        ProcessingError, match="^The server at 127.0.0.1 sent an invalid or incomplete"
    ):
        await download(f"http://127.0.0.1:{server.port}/truncated", tmp_path / "out.mp4", lax)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("path", ["/declared-too-large", "/endless", "/endless-chunked"])
async def test_byte_cap(path: str, server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    with pytest.raises(
        PayloadTooLargeError, match="^The file at the URL is larger than the 4 MiB limit$"
    ):
        await download(f"http://127.0.0.1:{server.port}{path}", tmp_path / "out.mp4", lax)
    assert leftovers(tmp_path) == []


async def test_body_ends_at_declared_length(
    server: HttpServer, lax: Settings, tmp_path: Path
) -> None:
    got = await download(f"http://127.0.0.1:{server.port}/lying", tmp_path / "out.mp4", lax)
    assert got.size == 1000
    assert (tmp_path / "out.mp4").stat().st_size == 1000


@pytest.mark.parametrize("path", ["/stall-headers", "/stall-body"])
async def test_read_timeout(path: str, server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(
        ProcessingError,
        match=r"^The download timed out: the server at 127\.0\.0\.1 sent nothing for 0\.5 sec",
    ):
        await download(f"http://127.0.0.1:{server.port}{path}", tmp_path / "out.mp4", lax)
    assert time.monotonic() - started < 3
    assert leftovers(tmp_path) == []


async def test_total_deadline(settings: Settings, server: HttpServer, tmp_path: Path) -> None:
    short = configure(settings, server.port, url_fetch_timeout_seconds=1)
    with pytest.raises(ProcessingError, match="^The download did not finish within the 1 second"):
        await download(f"http://127.0.0.1:{server.port}/trickle", tmp_path / "out.mp4", short)
    assert leftovers(tmp_path) == []


async def test_connection_refused(lax: Settings, tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = configure(lax, port)
    with pytest.raises(
        ProcessingError, match="^Could not connect to 127.0.0.1: the connection was refused$"
    ):
        await download(f"http://127.0.0.1:{port}/", tmp_path / "out.mp4", settings)


async def test_progress_is_throttled(server: HttpServer, lax: Settings, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []

    async def on_progress(received: int, total: int | None) -> None:
        calls.append((received, total))

    started = time.monotonic()
    got = await download(
        f"http://127.0.0.1:{server.port}/slow", tmp_path / "out.mp4", lax, on_progress
    )
    elapsed = time.monotonic() - started
    assert got.size == 1024 * 1024
    assert calls[-1] == (got.size, got.size)
    assert 2 <= len(calls) <= elapsed * 4 + 2
    assert [r for r, _ in calls] == sorted(r for r, _ in calls)


async def test_cancellation_removes_the_partial_file(
    server: HttpServer, settings: Settings, tmp_path: Path
) -> None:
    patient = configure(settings, server.port, url_fetch_read_timeout_seconds=10)
    task = asyncio.create_task(
        download(f"http://127.0.0.1:{server.port}/stall-body", tmp_path / "out.mp4", patient)
    )
    for _ in range(200):
        if leftovers(tmp_path):
            break
        await asyncio.sleep(0.01)
    assert leftovers(tmp_path), "the partial file never appeared"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(tmp_path) == []


# -- TLS: the socket goes to the checked address, the certificate is checked on the name -----


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=public.test", "-addext", "subjectAltName=DNS:public.test"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_server(
    video: bytes, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[HttpServer, list[str | None]]]:
    cert, key = certificate
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    running = HttpServer({"/video.mp4": respond(video, headers=[("Content-Type", "video/mp4")])})
    await running.start(context)
    # Our CA instead of certifi's: the only difference from production.
    monkeypatch.setattr(ssrf, "_ssl_context", lambda: ssl.create_default_context(cafile=cert))
    yield running, names
    await running.stop()


async def test_https_connects_to_checked_address_with_sni(
    tls_server: tuple[HttpServer, list[str | None]], settings: Settings, tmp_path: Path
) -> None:
    server, names = tls_server
    strict = configure(settings, server.port, url_fetch_allow_private=False)
    got = await download(
        f"https://public.test:{server.port}/video.mp4", tmp_path / "out.mp4", strict,
        policy=public_policy(),
    )  # fmt: skip
    assert got.filename == "video.mp4"
    assert names == ["public.test"]


async def test_https_certificate_is_checked_on_the_name(
    tls_server: tuple[HttpServer, list[str | None]], settings: Settings, tmp_path: Path
) -> None:
    server, _ = tls_server
    strict = configure(settings, server.port, url_fetch_allow_private=False)
    dns = FakeDns({"other.test": ["127.0.0.1"]})
    with pytest.raises(ProcessingError, match="^Could not connect to other.test: its certificate"):
        await download(
            f"https://other.test:{server.port}/video.mp4", tmp_path / "out.mp4", strict,
            policy=public_policy(dns),
        )  # fmt: skip
    assert server.requests == []
    assert leftovers(tmp_path) == []


async def test_validate_url_returns_the_checked_url(strict: Settings) -> None:
    checked = await validate_url("HTTPS://Public.Test/Clip.mp4?x=1#t=3", strict, public_policy())
    assert checked.url == "https://public.test/Clip.mp4?x=1"
    with pytest.raises(ForbiddenUrlError, match="intranet.test resolves to a private address"):
        await validate_url("https://intranet.test/", strict, public_policy())
