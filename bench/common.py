"""What every benchmark shares: the result shape, a running `clipo-gql dev`, clips, timing.

Each benchmark module `bench/b<N>_<name>.py` has `async def run(ctx: Context) -> list[Result]`
and measures clipo-gql beside its baseline in the same run, `ctx.repeats` times each,
alternating the two so machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Context:
    workdir: Path  # scratch space for this run, removed afterwards
    repeats: int  # at least 5 for a real run; 1 for the CI smoke run
    smoke: bool  # tiny sizes: only proves the code runs
    redis_url: str


@dataclass
class Result:
    number: int  # the table row
    name: str
    unit: str  # e.g. "s", "MB/s", "req/s"
    ours: list[float]
    baseline: list[float]
    baseline_name: str
    higher_is_better: bool
    target: float  # the ratio to reach: ours/baseline (higher better) or ours/baseline (lower)
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """ours / baseline of the medians: for times, lower is better; for rates, higher."""
        return statistics.median(self.ours) / statistics.median(self.baseline)

    @property
    def met(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


def make_clip(path: Path, *, seconds: float, size: str = "1280x720", webm: bool = False) -> Path:
    """A clip like a phone's: testsrc2 video with a sine tone, H.264/AAC MP4 or VP9/Opus."""
    video = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"]
    codecs = [*video, "-c:a", "libopus"] if webm else [
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac"
    ]  # fmt: skip
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        *codecs, "-shortest", str(path),
    )  # fmt: skip
    return path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    media: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"


def child_env(ctx: Context, **extra: str) -> dict[str, str]:
    """The environment of a `python -m bench....` child: this checkout importable, our Redis."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "REDIS_URL": ctx.redis_url, **extra}


async def wait_ready(url: str, exited: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Poll `url`/readyz until it answers 200; fail at once if the process exited."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if exited():
                raise RuntimeError(f"{what} exited")
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready in {seconds:.0f} s")


async def capture(
    *argv: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[int, bytes, bytes]:
    """Run a command to its end: exit status, stdout, stderr. Killed if we are cancelled."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out, err


def _spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def _app_env(
    ctx: Context, run: str, media: Path, base: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, str]:
    """A benchmark's clipo-gql process: its own media folder, queue and channels."""
    return {
        **base,
        "MEDIA_DIR": str(media),
        "REDIS_URL": ctx.redis_url,
        "QUEUE_NAME": f"clipo-bench:{run}:queue",
        "REDIS_PREFIX": f"clipo-bench:{run}",
        # The benchmarks' load is one client on one address, far above the per-client
        # defaults (row 8 measures the limits' cost itself).
        "RATE_LIMIT_VIDEOS": "1000000/minute",
        "MAX_ACTIVE_VIDEOS": "1000000",
        "WS_MAX_CONNECTIONS_PER_CLIENT": "100000",
        **env,
    }


@asynccontextmanager
async def dev_server(ctx: Context, **env: str) -> AsyncIterator[Service]:
    """`clipo-gql dev` in its own process (its own queue and channels), stopped afterwards."""
    port = free_port()
    run = uuid.uuid4().hex[:8]
    media = ctx.workdir / f"media-{run}"
    base = {k: v for k, v in os.environ.items() if k != "MONGODB_URL"}
    environment = _app_env(ctx, run, media, base, env)
    log = ctx.workdir / f"dev-{run}.log"
    proc = _spawn([sys.executable, "-m", "clipo_gql.cli", "dev", "--port", str(port)],
                  environment, ctx.workdir, log)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, lambda: proc.poll() is not None, f"clipo-gql dev (log: {log})")
        yield Service(url=url, proc=proc, media=media)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(media, ignore_errors=True)


@asynccontextmanager
async def deployment(
    ctx: Context, mongodb_url: str, workers: int, **env: str
) -> AsyncIterator[Service]:
    """As deployed: one `clipo-gql serve` and `workers` × `clipo-gql worker` processes on
    `mongodb_url`, sharing a media folder, a queue and channels of their own."""
    port = free_port()
    run = uuid.uuid4().hex[:8]
    media = ctx.workdir / f"media-{run}"
    database = {"MONGODB_URL": mongodb_url, "MONGODB_DATABASE": f"bench_{run}", "AUTH_MODE": "off"}
    environment = _app_env(ctx, run, media, {**os.environ, **database}, env)
    cli = [sys.executable, "-m", "clipo_gql.cli"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        logs = [ctx.workdir / f"worker-{run}-{n}.log" for n in range(workers)]
        for log in logs:
            procs.append(_spawn([*cli, "worker"], environment, ctx.workdir, log))
        serve_log = ctx.workdir / f"serve-{run}.log"
        serve = _spawn([*cli, "serve", "--port", str(port)], environment, ctx.workdir, serve_log)
        procs.append(serve)
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, lambda: serve.poll() is not None, f"clipo-gql serve ({serve_log})")
        deadline = time.monotonic() + 60
        while not all("worker ready" in log.read_text(errors="replace") for log in logs):
            if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"a clipo-gql worker did not start (logs: {logs})")
            await asyncio.sleep(0.1)
        yield Service(url=url, proc=serve, media=media)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(media, ignore_errors=True)


@asynccontextmanager
async def ferretdb(ctx: Context) -> AsyncIterator[str | None]:
    """A private FerretDB (CLIPO_FERRETDB_BIN, built by scripts/ferretdb-env) on a free port:
    its MONGODB_URL, or None when there is no binary (the row then runs on the stand-in)."""
    binary = os.environ.get("CLIPO_FERRETDB_BIN")
    if not binary or not os.access(binary, os.X_OK):
        yield None
        return
    port = free_port()
    data = ctx.workdir / f"ferretdb-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        binary, "-listen", f"127.0.0.1:{port}", "-dir", str(data), "-log-level", "error",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        proc.kill()
        await proc.wait()
        shutil.rmtree(data, ignore_errors=True)


async def alternate(
    repeats: int,
    ours: Callable[[], Awaitable[float]],
    baseline: Callable[[], Awaitable[float]],
) -> tuple[list[float], list[float]]:
    """Run both `repeats` times, interleaved, the order swapped each round (ours, baseline,
    baseline, ours, ...): whichever runs second in a round (warmer caches, a busier
    machine) is then not always the same side."""
    a: list[float] = []
    b: list[float] = []
    for round_ in range(repeats):
        if round_ % 2:
            b.append(await baseline())
            a.append(await ours())
        else:
            a.append(await ours())
            b.append(await baseline())
    return a, b


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


UPLOAD = (
    '{"query": "mutation($f: Upload!) { uploadVideo(file: $f) { id } }", "variables": {"f": null}}'
)
WATCH = "subscription($id: ID!) { videoStatus(id: $id) { status error } }"


async def upload(http: httpx.AsyncClient, service: Service, path: Path) -> str:
    """Upload through GraphQL multipart, streaming the file; the new video's id."""
    with path.open("rb") as fh:
        response = await http.post(
            f"{service.url}/graphql",
            data={"operations": UPLOAD, "map": '{"0": ["variables.f"]}'},
            files={"0": (path.name, fh, "video/mp4")},
            headers={"apollo-require-preflight": "true"},
        )
    body = response.json()
    if "errors" in body:
        raise RuntimeError(f"upload refused: {body['errors']}")
    video_id: str = body["data"]["uploadVideo"]["id"]
    return video_id


async def until_final(service: Service, video_id: str, authorization: str | None = None) -> str:
    """Follow the video over the subscription until DONE or FAILED; the final status."""
    import websockets
    from websockets.typing import Subprotocol

    async with websockets.connect(
        service.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        init = {"authorization": authorization} if authorization else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        while json.loads(await ws.recv())["type"] != "connection_ack":
            pass
        payload = {"query": WATCH, "variables": {"id": video_id}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        status = ""
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "next":
                video = message["payload"]["data"]["videoStatus"]
                status = video["status"]
                if status == "FAILED":
                    raise RuntimeError(f"video {video_id} FAILED: {video['error']}")
            elif message["type"] in ("complete", "error"):
                return status


async def video_states(
    service: Service, query: str, video_id: str
) -> AsyncIterator[dict[str, Any]]:
    """Each `videoStatus` state of `query` the subscription sends (graphql-transport-ws),
    until the server completes it; an error message raises."""
    import websockets
    from websockets.typing import Subprotocol

    async with websockets.connect(
        service.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        while json.loads(await ws.recv())["type"] != "connection_ack":
            pass
        payload = {"query": query, "variables": {"id": video_id}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "next":
                state: dict[str, Any] = message["payload"]["data"]["videoStatus"]
                yield state
            elif message["type"] == "error":
                raise RuntimeError(f"video {video_id}: {message['payload']}")
            elif message["type"] == "complete":
                return
