"""Benchmark 3: upload throughput of a 1 GiB file through GraphQL multipart, against nginx
receiving the same bytes to a file (a dav `PUT`) on the same disk.

Both sides get the same client, curl, reading the same file from the page cache, and curl's
own `time_total` is the time: from connecting to the last byte of the answer. Ours answers
once the file is on disk, renamed into the video's folder, stored and queued; nginx once the
body is in its temp file and renamed to the target. Neither syncs to the disk.

While each upload runs, the server's VmRSS is polled every 20 ms: uploads stream to disk, so
the peak must not grow with the file (a budget of 64 MiB, checked at 100 MiB and 1 GiB).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    UPLOAD,
    Context,
    Result,
    Service,
    alternate,
    capture,
    dev_server,
    make_clip,
    rss_kib,
)
from bench.nginx import Nginx, nginx

MiB = 1 << 20
RSS_BUDGET_MIB = 64
POLL_SECONDS = 0.02
DELETE = "mutation($id: ID!) { deleteVideo(id: $id) }"


def make_upload(path: Path, clip: Path, size: int) -> Path:
    """A real MP4 (so our sniffing accepts it) padded to `size` with random bytes.

    One random MiB repeated: cheap to write, nothing compresses it on the way, and the file
    is not sparse (reading holes would flatter both clients).
    """
    block = os.urandom(MiB)
    with path.open("wb") as out:
        written = out.write(clip.read_bytes())
        while written < size:
            written += out.write(block[: min(MiB, size - written)])
    return path


# -- memory and CPU -------------------------------------------------------------------------


@dataclass
class Rss:
    before_kib: int
    peak_kib: int

    @property
    def growth_mib(self) -> float:
        return max(self.peak_kib - self.before_kib, 0) / 1024


def _total_rss(pids: list[int]) -> int:
    return sum(rss_kib(pid) for pid in pids)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (all their threads)."""
    ticks = 0
    for pid in pids:
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def watch_rss(pids: Callable[[], list[int]]) -> AsyncIterator[Rss]:
    """VmRSS before, and the highest seen while the block runs (polled every 20 ms).

    VmHWM would catch spikes between polls, but it only ever rises: after the first large
    upload it would hide every later one.
    """
    rss = Rss(before_kib=_total_rss(pids()), peak_kib=0)
    rss.peak_kib = rss.before_kib

    async def poll() -> None:
        while True:
            with suppress(OSError, RuntimeError):  # a process that went away meanwhile
                rss.peak_kib = max(rss.peak_kib, _total_rss(pids()))
            await asyncio.sleep(POLL_SECONDS)

    task = asyncio.create_task(poll())
    try:
        yield rss
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        with suppress(OSError, RuntimeError):
            rss.peak_kib = max(rss.peak_kib, _total_rss(pids()))


# -- the two uploads -------------------------------------------------------------------------


async def curl(*args: str) -> tuple[int, str, float]:
    """HTTP status, body and curl's `time_total` of one transfer."""
    returncode, out, err = await capture(
        "curl", "-sS", "--max-time", "600",
        # No `Expect: 100-continue` round trip: nothing here is refused, on either side.
        "-H", "Expect:",
        "-w", "\n%{http_code} %{time_total}", *args,
    )  # fmt: skip
    if returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)} failed: {err.decode()}")
    body, _, tail = out.decode().rpartition("\n")
    code, seconds = tail.split()
    return int(code), body, float(seconds)


async def upload_ours(service: Service, path: Path) -> tuple[float, str]:
    """curl's time for one GraphQL multipart upload, and the new video's id."""
    code, body, seconds = await curl(
        f"{service.url}/graphql",
        "-H", "apollo-require-preflight: true",
        # --form-string: the JSON is sent as is (-F would read `;type=` or a leading `@`).
        "--form-string", f"operations={UPLOAD}",
        "--form-string", 'map={"0": ["variables.f"]}',
        "-F", f"0=@{path};type=video/mp4",
    )  # fmt: skip
    data = json.loads(body) if code == 200 else {}
    if code != 200 or "errors" in data:
        raise RuntimeError(f"upload refused: HTTP {code} {body[:500]}")
    video_id: str = data["data"]["uploadVideo"]["id"]
    return seconds, video_id


async def delete_ours(http: httpx.AsyncClient, service: Service, video_id: str) -> None:
    # At once: the worker would otherwise probe and remux it beside the next upload.
    deleted = await http.post(
        f"{service.url}/graphql", json={"query": DELETE, "variables": {"id": video_id}}
    )
    if deleted.json() != {"data": {"deleteVideo": True}}:
        raise RuntimeError(f"could not delete {video_id}: {deleted.text}")


async def upload_nginx(server: Nginx, path: Path) -> tuple[float, Path]:
    """curl's time for one PUT of the file, and where nginx stored it."""
    name = f"{uuid.uuid4().hex}.mp4"
    code, _, seconds = await curl("-o", "/dev/null", "-T", str(path), f"{server.url}/upload/{name}")
    if code != 201:
        raise RuntimeError(f"nginx answered the PUT with {code}")
    return seconds, server.root / "upload" / name


async def delete_nginx(stored: Path, size: int) -> None:
    stored_size = stored.stat().st_size  # noqa: ASYNC240 - one stat, after the timing
    if stored_size != size:
        raise RuntimeError(f"nginx stored {stored_size} bytes, not {size}")
    await asyncio.to_thread(stored.unlink)


# -- the benchmark ---------------------------------------------------------------------------


@dataclass
class Costs:
    """Per (side, size): each upload's RSS growth (MiB, over the RSS just before it) and the
    server's CPU time (s); per side, the RSS after the warm-up and at the end (KiB)."""

    growth: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    settled_kib: dict[str, int] = field(default_factory=dict)
    end_kib: dict[str, int] = field(default_factory=dict)

    def worst(self, side: str, size: int) -> float:
        return max(self.growth[(side, size)])


def size_text(size: int) -> str:
    return f"{size // (1 << 30)} GiB" if size >= 1 << 30 else f"{size // MiB} MiB"


async def run(ctx: Context) -> list[Result]:
    big, small = (8 * MiB, 2 * MiB) if ctx.smoke else (1 << 30, 100 * MiB)
    clip = make_clip(ctx.workdir / "b3-head.mp4", seconds=1.0, size="320x240")
    files = {
        size: await asyncio.to_thread(make_upload, ctx.workdir / f"b3-{size}.mp4", clip, size)
        for size in (small, big)
    }
    costs = Costs()
    async with (
        dev_server(ctx, MAX_UPLOAD_BYTES=str(4 << 30)) as service,
        nginx(ctx) as server,
        httpx.AsyncClient(timeout=120) as http,
    ):
        pids: dict[str, Callable[[], list[int]]] = {
            "ours": lambda: [service.proc.pid],
            "nginx": server.worker_pids,
        }

        async def ours_once(size: int) -> float:
            seconds, video_id = await upload_ours(service, files[size])
            await delete_ours(http, service, video_id)
            return seconds

        async def nginx_once(size: int) -> float:
            seconds, stored = await upload_nginx(server, files[size])
            await delete_nginx(stored, size)
            return seconds

        async def measured(side: str, size: int) -> float:
            started = cpu_seconds(pids[side]())
            async with watch_rss(pids[side]) as rss:
                if side == "ours":
                    seconds, video_id = await upload_ours(service, files[size])
                else:
                    seconds, stored = await upload_nginx(server, files[size])
            costs.cpu.setdefault((side, size), []).append(cpu_seconds(pids[side]()) - started)
            costs.growth.setdefault((side, size), []).append(rss.growth_mib)
            if side == "ours":
                await delete_ours(http, service, video_id)
            else:
                await delete_nginx(stored, size)
            return size / 1e6 / seconds

        # Warm-up: imports, first connections, the allocator's first arenas on both sides.
        await ours_once(small)
        await nginx_once(small)
        for side, get in pids.items():
            costs.settled_kib[side] = _total_rss(get())
        small_ours, small_nginx = await alternate(
            ctx.repeats, lambda: measured("ours", small), lambda: measured("nginx", small)
        )
        ours, baseline = await alternate(
            ctx.repeats, lambda: measured("ours", big), lambda: measured("nginx", big)
        )
        for side, get in pids.items():
            costs.end_kib[side] = _total_rss(get())
    for path in (*files.values(), clip):
        path.unlink()  # 1 GiB: not left for the next benchmarks to share the disk with
    return [
        Result(
            number=3,
            name=f"upload {size_text(big)}, GraphQL multipart vs nginx PUT",
            unit="MB/s",
            ours=ours,
            baseline=baseline,
            baseline_name="nginx dav PUT of the same bytes to a file on the same disk",
            higher_is_better=True,
            target=0.6,
            notes=notes(costs, small, big, small_ours, small_nginx),
        )
    ]


def notes(
    costs: Costs, small: int, big: int, small_ours: list[float], small_nginx: list[float]
) -> list[str]:
    def growth(side: str) -> str:
        return ", ".join(f"{size_text(s)}: {costs.worst(side, s):.1f} MiB" for s in (small, big))

    def cpu(side: str) -> str:
        return f"{statistics.median(costs.cpu[(side, big)]):.2f} s"

    worst = max(costs.worst("ours", size) for size in (small, big))
    verdict = "met" if worst <= RSS_BUDGET_MIB else "**missed**"
    settled = {side: kib / 1024 for side, kib in costs.settled_kib.items()}
    end = {side: kib / 1024 for side, kib in costs.end_kib.items()}
    return [
        "client: curl for both sides (`-F` multipart for ours, `-T` PUT for nginx), the file "
        "in the page cache, curl's time_total; MB = 10^6 bytes; each of our uploads is deleted "
        "through `deleteVideo` right after it is timed, so the worker never competes",
        "nginx: one worker process (ours is one uvicorn process), default "
        "client_body_buffer_size (16k), access log on (as uvicorn's)",
        f"server CPU time (user + system) per {size_text(big)} upload, median: ours "
        f"{cpu('ours')}, nginx worker {cpu('nginx')}",
        f"server RSS growth during one upload, worst of {len(small_ours)} (peak VmRSS polled "
        f"every 20 ms − VmRSS before it): ours {growth('ours')} "
        f"(≤ {RSS_BUDGET_MIB} MiB: {verdict}); nginx worker {growth('nginx')}",
        f"server RSS after the warm-up → after every upload: ours {settled['ours']:.0f} → "
        f"{end['ours']:.0f} MiB, nginx worker {settled['nginx']:.1f} → {end['nginx']:.1f} MiB",
        f"{size_text(small)} uploads: ours {statistics.median(small_ours):.0f} MB/s, nginx "
        f"{statistics.median(small_nginx):.0f} MB/s (medians)",
    ]
