"""A private SeaweedFS S3 server for tests and benchmarks, and a minimal S3 client for them.

`scripts/seaweedfs-env` builds `weed` once and exports CLIPO_SEAWEEDFS_BIN (and starts the
suite's own server through `python -m tests.s3server start`, see `main`). A test or benchmark
that wants a server of its own:

    with seaweedfs_s3() as s3:   # CLIPO_SEAWEEDFS_BIN, or binary=...
        endpoint_url, bucket, key, secret = s3
        ...

It runs `weed mini` (master, volume server, filer and S3 gateway in one process) on free
loopback ports with its data in a temp dir, one identity with admin rights (the key and a
random secret), and the bucket created; it is stopped, and the dir removed, when the block
ends. Nothing outside the standard library and httpx: `S3Client` signs requests with AWS
Signature V4 (headers, or the query string for presigned URLs), enough for the tests that
check the server itself; the application uses a real S3 client.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import httpx

REGION = "us-east-1"
ACCESS_KEY_ID = "clipotest"
DEFAULT_BUCKET = "clipo-test"
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# The listeners of `weed mini`, each given a free port: weed's default gRPC ports are the HTTP
# port + 10000, which may be taken, and the defaults (9333, 9340, 8888, 8333, 12535) clash with
# a second instance.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class S3Server(NamedTuple):
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """The CLIPO_S3_* variables that point a process at this server."""
        return {
            "CLIPO_S3_ENDPOINT_URL": self.endpoint_url,
            "CLIPO_S3_BUCKET": self.bucket,
            "CLIPO_S3_ACCESS_KEY_ID": self.access_key_id,
            "CLIPO_S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "CLIPO_S3_REGION": REGION,
        }

    def client(self) -> S3Client:
        return S3Client(self.endpoint_url, self.access_key_id, self.secret_access_key)


def from_env() -> S3Server | None:
    """The server named by CLIPO_S3_* (./scripts/test exports them), or None."""
    url = os.environ.get("CLIPO_S3_ENDPOINT_URL")
    if not url:
        return None
    return S3Server(
        url,
        os.environ.get("CLIPO_S3_BUCKET", DEFAULT_BUCKET),
        os.environ["CLIPO_S3_ACCESS_KEY_ID"],
        os.environ["CLIPO_S3_SECRET_ACCESS_KEY"],
    )


# --- Signature V4 -------------------------------------------------------------------------


def _quote(value: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(value, safe=safe)


def _canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(params.items()))


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _signature(
    secret: str,
    region: str,
    amz_date: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    payload_hash: str,
) -> tuple[str, str]:
    """(signed header names, signature) for one request; `headers` has lower-case names."""
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            path,
            query,
            "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _signing_key(secret, amz_date[:8], region)
    return ";".join(names), hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class S3Client:
    """Path-style S3 requests signed with SigV4: just what the server's own tests need."""

    def __init__(
        self, endpoint_url: str, access_key_id: str, secret: str, region: str = REGION
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.host = urllib.parse.urlsplit(self.endpoint_url).netloc
        self.access_key_id = access_key_id
        self.secret = secret
        self.region = region
        self.http = httpx.Client(timeout=30)

    def __enter__(self) -> S3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _path(self, bucket: str, key: str) -> str:
        return "/" + _quote(bucket) + ("/" + _quote(key, safe="/-_.~") if key else "")

    def request(
        self,
        method: str,
        bucket: str,
        key: str = "",
        *,
        params: Mapping[str, str] | None = None,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        path = self._path(bucket, key)
        query = _canonical_query(params or {})
        amz_date = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        payload_hash = hashlib.sha256(content).hexdigest()
        signed = {k.lower(): v for k, v in (headers or {}).items()}
        signed |= {"host": self.host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
        names, signature = _signature(
            self.secret, self.region, amz_date, method, path, query, signed, payload_hash
        )
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        del signed["host"]
        url = f"{self.endpoint_url}{path}" + (f"?{query}" if query else "")
        return self.http.request(method, url, content=content, headers=signed)

    def presign(
        self,
        bucket: str,
        key: str,
        *,
        method: str = "GET",
        expires: int = 300,
        params: Mapping[str, str] | None = None,
    ) -> str:
        """A presigned URL (SigV4 in the query string, only `host` signed)."""
        path = self._path(bucket, key)
        amz_date = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        query = dict(params or {}) | {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{self.access_key_id}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        canonical_query = _canonical_query(query)
        _, signature = _signature(
            self.secret,
            self.region,
            amz_date,
            method,
            path,
            canonical_query,
            {"host": self.host},
            UNSIGNED_PAYLOAD,
        )
        return f"{self.endpoint_url}{path}?{canonical_query}&X-Amz-Signature={signature}"

    def create_bucket(self, bucket: str) -> None:
        response = self.request("PUT", bucket)
        if response.status_code != 200 and b"BucketAlreadyOwnedByYou" not in response.content:
            raise RuntimeError(f"creating bucket {bucket}: {response.status_code} {response.text}")

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        response = self.request("GET", bucket, params={"list-type": "2", "prefix": prefix})
        response.raise_for_status()
        root = ET.fromstring(response.content)
        return [el.text or "" for el in root.iter(f"{S3_NS}Key")]


# --- the server ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (each socket held until all are picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def weed_command(binary: str, data_dir: Path, ports: Mapping[str, int], config: Path) -> list[str]:
    """`weed mini` (master, volume server, filer, S3 gateway and admin server in one process,
    tuned for a single node) on loopback: 64 MB volumes made on demand, none preallocated, no
    telemetry, no WebDAV, no Iceberg or Lance catalogs (fixed ports), no admin UI."""
    flags = {
        "dir": str(data_dir),
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.volumeSizeLimitMB": "64",
        "volume.max": "0",  # as many as the disk holds; each is made when needed
        "master.telemetry": "false",
        "s3.config": str(config),
        "s3.port.iceberg": "0",
        "s3.port.lance": "0",
        "webdav": "false",
        "admin.ui": "false",
        "admin.port.legacy": "0",
        "filer.localSocket": str(data_dir.parent / "filer.sock"),
        "s3.localSocket": str(data_dir.parent / "s3.sock"),
    }
    flags |= {name: str(port) for name, port in ports.items()}
    # Logs to stderr only (glog would add files in /tmp), and toml configs (security.toml,
    # filer.toml...) looked for in the work dir, which has none, not in ~/.seaweedfs or /etc.
    global_flags = ["-logtostderr", f"-config_dir={data_dir.parent}"]
    return [binary, *global_flags, "mini", *(f"-{k}={v}" for k, v in flags.items())]


def grpc_sockets(ports: Mapping[str, int]) -> list[Path]:
    """The Unix sockets weed makes for its gRPC listeners: fixed paths in /tmp, not -dir."""
    return [
        Path(f"/tmp/seaweedfs-{name.split('.')[0]}-grpc-{port}.sock")
        for name, port in ports.items()
        if name.endswith(".grpc")
    ]


class Running(NamedTuple):
    process: subprocess.Popen[bytes]
    server: S3Server
    ports: dict[str, int]
    work_dir: Path


class _Exited(Exception):
    pass


def identity_config(access_key_id: str, secret: str) -> dict[str, object]:
    """weed's -s3.config: one identity allowed everything, so nothing is anonymous."""
    return {
        "identities": [
            {
                "name": "clipo-test",
                "credentials": [{"accessKey": access_key_id, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def _log_tail(work_dir: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join((work_dir / "log").read_text(errors="replace").splitlines()[-lines:])
    return ""


def _wait_ready(process: subprocess.Popen[bytes], server: S3Server, deadline: float) -> None:
    """Until the bucket exists and takes a write (weed grows its first volumes on demand)."""
    last = "no answer"
    with server.client() as client:
        created = False
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise _Exited(f"weed exited with {process.returncode}")
            try:
                if not created:
                    client.create_bucket(server.bucket)
                    created = True
                probe = client.request("PUT", server.bucket, ".clipo-ready", content=b"ok")
                if probe.status_code == 200:
                    client.request("DELETE", server.bucket, ".clipo-ready").raise_for_status()
                    return
                last = f"probe PUT: {probe.status_code} {probe.text[:200]}"
            except (httpx.TransportError, RuntimeError) as exc:
                last = str(exc)[:300]
            time.sleep(0.1)
    raise TimeoutError(f"SeaweedFS S3 not ready: {last}")


def start(
    binary: str, work_dir: Path, bucket: str = DEFAULT_BUCKET, timeout: float = 60.0
) -> Running:
    """Start `weed mini` with its files in `work_dir` (kept; see `stop`), ready to use.

    The process outlives the caller unless `stop`ped: `python -m tests.s3server start` relies
    on that. Tries new ports twice more when weed exits at start (a port taken meanwhile).
    """
    secret = secrets.token_hex(20)
    config = work_dir / "s3.json"
    config.write_text(json.dumps(identity_config(ACCESS_KEY_ID, secret)))
    data = work_dir / "data"
    for attempt in range(3):
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", bucket, ACCESS_KEY_ID, secret)
        with open(work_dir / "log", "ab") as log:
            process = subprocess.Popen(
                weed_command(binary, data, ports, config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        running = Running(process, server, ports, work_dir)
        try:
            _wait_ready(process, server, time.monotonic() + timeout)
        except _Exited as exc:
            stop(running)
            if attempt < 2:
                continue
            raise RuntimeError(f"{exc}; log:\n{_log_tail(work_dir)}") from None
        except BaseException:
            stop(running)
            raise
        return running
    raise AssertionError("unreachable")


def stop(running: Running, grace: float = 5.0) -> None:
    """SIGTERM (weed mini stops in about 1.5 s), then SIGKILL after `grace` s; then the gRPC
    sockets it left in /tmp, if any."""
    process = running.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for path in grpc_sockets(running.ports):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def seaweedfs_s3(
    bucket: str = DEFAULT_BUCKET, binary: str | None = None, timeout: float = 60.0
) -> Iterator[S3Server]:
    """A private SeaweedFS S3 server with `bucket` created, for the duration of the block."""
    binary = binary or os.environ.get("CLIPO_SEAWEEDFS_BIN")
    if not binary:
        raise RuntimeError("CLIPO_SEAWEEDFS_BIN is not set (./scripts/test builds weed)")
    work_dir = Path(tempfile.mkdtemp(prefix="clipo-seaweedfs-"))
    try:
        running = start(binary, work_dir, bucket, timeout)
        try:
            yield running.server
        finally:
            stop(running)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    """`python -m tests.s3server start WORK_DIR [BUCKET]`: start a server that outlives this
    process (weed from CLIPO_SEAWEEDFS_BIN, files in WORK_DIR) and print shell assignments for
    scripts/seaweedfs-env: its pid, its gRPC sockets and the CLIPO_S3_* exports."""
    if len(argv) not in (2, 3) or argv[0] != "start":
        print("usage: python -m tests.s3server start WORK_DIR [BUCKET]", file=sys.stderr)
        return 2
    binary = os.environ.get("CLIPO_SEAWEEDFS_BIN")
    if not binary:
        print("CLIPO_SEAWEEDFS_BIN is not set", file=sys.stderr)
        return 2
    try:
        running = start(binary, Path(argv[1]), argv[2] if len(argv) == 3 else DEFAULT_BUCKET)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    sockets = " ".join(shlex.quote(str(p)) for p in grpc_sockets(running.ports))
    print(f"seaweedfs_pid={running.process.pid}")
    print(f"seaweedfs_sockets=({sockets})")
    for name, value in running.server.env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
