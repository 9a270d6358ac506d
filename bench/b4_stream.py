"""Benchmark 4: `GET /stream/{id}` throughput against nginx sending the same file with sendfile.

A clip goes through the API until DONE; nginx then serves that very processed file (a symlink
in its root), so both sides send the same bytes from the same page cache. The client is curl
for both, in its own process (C, so it is not the bottleneck it would be in Python):

- one client fetching the whole file, several times over one keep-alive connection (MB/s);
- 50 connections at once (`curl --parallel`), each request a random 1 MiB range, the same
  ranges in the same order for both sides (req/s and MB/s).

The dev server's VmRSS is read before, polled during, and read after the load: files are sent
in chunks, so it should stay flat.
"""

from __future__ import annotations

import random
import time

import httpx

from bench.b3_upload import cpu_seconds, watch_rss
from bench.common import (
    Context,
    Result,
    alternate,
    capture,
    dev_server,
    make_clip,
    rss_kib,
    upload,
)
from bench.common import until_final as until_done
from bench.nginx import nginx

MiB = 1 << 20
CONCURRENCY = 50
WRITE_OUT = "%{http_code} %{size_download} %{time_total}\n"


async def curl(args: list[str], config: str | None = None) -> list[tuple[int, int, float]]:
    """Status, bytes and time of each transfer of one curl run (`config` on its stdin)."""
    returncode, out, err = await capture(
        "curl", "-sS", "--max-time", "300", "-w", WRITE_OUT, *args,
        stdin=config.encode() if config is not None else None,
    )  # fmt: skip
    if returncode != 0:
        raise RuntimeError(f"curl failed ({returncode}): {err.decode()[-1000:]}")
    transfers = []
    for line in out.decode().splitlines():
        code, size, seconds = line.split()
        transfers.append((int(code), int(size), float(seconds)))
    return transfers


async def whole_file(url: str, size: int, fetches: int) -> float:
    """MB/s of one client fetching the file `fetches` times in a row, one connection."""
    args = [part for _ in range(fetches) for part in ("-o", "/dev/null", url)]
    transfers = await curl(args)
    if len(transfers) != fetches or any(t[:2] != (200, size) for t in transfers):
        raise RuntimeError(f"{url}: expected {fetches} × 200 with {size} bytes: {transfers[:3]}")
    return sum(t[1] for t in transfers) / 1e6 / sum(t[2] for t in transfers)


def range_config(url: str, size: int, count: int, seed: int) -> str:
    """A curl config: `count` GETs of random 1 MiB ranges of `url`, bodies discarded."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        start = rng.randrange(size - MiB + 1)
        lines += [f'url = "{url}"', f'range = "{start}-{start + MiB - 1}"', 'output = "/dev/null"']
    return "\n".join(lines) + "\n"


async def ranges(url: str, size: int, count: int, seed: int) -> tuple[float, float]:
    """(req/s, MB/s) of `count` random 1 MiB ranges, 50 requests in flight."""
    config = range_config(url, size, count, seed)
    started = time.perf_counter()
    transfers = await curl(
        ["--parallel", "--parallel-max", str(CONCURRENCY), "--parallel-immediate", "-K", "-"],
        config,
    )
    took = time.perf_counter() - started
    if len(transfers) != count or any(t[:2] != (206, MiB) for t in transfers):
        bad = [t for t in transfers if t[:2] != (206, MiB)][:3]
        raise RuntimeError(f"{url}: {len(transfers)}/{count} ranges, unexpected: {bad}")
    return count / took, count * MiB / 1e6 / took


async def run(ctx: Context) -> list[Result]:
    seconds, frame = (6.0, "1280x720") if ctx.smoke else (60.0, "1280x720")
    fetches, count = (2, 100) if ctx.smoke else (20, 2000)
    clip = make_clip(ctx.workdir / "b4-clip.mp4", seconds=seconds, size=frame)
    async with dev_server(ctx) as service, httpx.AsyncClient(timeout=600) as http:
        video_id = await upload(http, service, clip)
        status = await until_done(service, video_id)
        if status != "DONE":
            raise RuntimeError(f"video {video_id} ended {status}")
        processed = service.media / "videos" / video_id / "video.mp4"
        size = processed.stat().st_size
        if size < MiB:
            raise RuntimeError(f"the processed file is too small for 1 MiB ranges: {size}")
        async with nginx(ctx) as server:
            (server.root / "video.mp4").symlink_to(processed)
            ours_url = f"{service.url}/stream/{video_id}"
            nginx_url = f"{server.url}/video.mp4"
            for url in (ours_url, nginx_url):  # warm-up: first requests, the page cache
                await whole_file(url, size, 1)
                await ranges(url, size, CONCURRENCY, seed=-1)
            pid = service.proc.pid
            cpu = {"ours": 0.0, "nginx": 0.0}

            async def timed_ranges(
                side: str, url: str, pids: list[int], seed: int
            ) -> tuple[float, float]:
                started = cpu_seconds(pids)
                rates = await ranges(url, size, count, seed)
                cpu[side] += cpu_seconds(pids) - started
                return rates

            rss_before = rss_kib(pid)
            async with watch_rss(lambda: [pid]) as rss:
                whole_ours, whole_nginx = await alternate(
                    ctx.repeats,
                    lambda: whole_file(ours_url, size, fetches),
                    lambda: whole_file(nginx_url, size, fetches),
                )
                # Interleaved as alternate() does; each pair fetches the same ranges.
                range_ours: list[tuple[float, float]] = []
                range_nginx: list[tuple[float, float]] = []
                for seed in range(ctx.repeats):
                    range_ours.append(await timed_ranges("ours", ours_url, [pid], seed))
                    nginx_pids = server.worker_pids()
                    range_nginx.append(await timed_ranges("nginx", nginx_url, nginx_pids, seed))
            rss_after = rss_kib(pid)
    growth = (rss_after - rss_before) / 1024
    # A few MiB come and go with the allocator; anything kept per request would be thousands
    # of times its size after these runs.
    flat = "RSS flat" if abs(growth) <= 16 else "**RSS not flat**"
    memory = (
        f"dev server VmRSS {rss_before / 1024:.0f} MiB before the measured load, "
        f"{rss.peak_kib / 1024:.0f} MiB at its peak (polled every 20 ms), "
        f"{rss_after / 1024:.0f} MiB after ({growth:+.1f} MiB: {flat})"
    )
    common = [
        f"file: the processed MP4 of a {seconds:.0f} s {frame} clip, {size / 1e6:.1f} MB, "
        "served by nginx from a symlink to the same file (page cache warm for both)",
        "nginx: one worker process (ours is one uvicorn process), sendfile on, access log on",
        "ours asks whether the video is DONE once (in the in-process MongoDB stand-in: "
        "dev_server() never passes MONGODB_URL), remembers it, and stats the file on every "
        "request",
        memory,
    ]
    per_request = {side: spent / (count * ctx.repeats) * 1e3 for side, spent in cpu.items()}
    load = (
        f"load: one curl process, `--parallel --parallel-max {CONCURRENCY}`, {count} GETs of "
        "random 1 MiB ranges (the same ones for both sides), timed around the whole run; "
        f"server CPU time (user + system) per request: ours {per_request['ours']:.2f} ms, "
        f"nginx worker {per_request['nginx']:.2f} ms"
    )
    return [
        Result(
            number=4,
            name="/stream whole file, 1 client",
            unit="MB/s",
            ours=whole_ours,
            baseline=whole_nginx,
            baseline_name="nginx static file, sendfile",
            higher_is_better=True,
            target=0.5,
            notes=[
                f"whole file: curl fetching it {fetches} times over one connection; "
                "MB/s = bytes ÷ the sum of curl's time_total",
                *common,
            ],
        ),
        Result(
            number=4,
            name=f"/stream random 1 MiB ranges, {CONCURRENCY} concurrent",
            unit="req/s",
            ours=[r for r, _ in range_ours],
            baseline=[r for r, _ in range_nginx],
            baseline_name="nginx static file, sendfile",
            higher_is_better=True,
            target=0.5,
            notes=[load],
        ),
        Result(
            number=4,
            name=f"/stream random 1 MiB ranges, {CONCURRENCY} concurrent",
            unit="MB/s",
            ours=[mb for _, mb in range_ours],
            baseline=[mb for _, mb in range_nginx],
            baseline_name="nginx static file, sendfile",
            higher_is_better=True,
            target=0.5,
            notes=["each 1 MiB range is 1.048576 MB: the same runs as the req/s row"],
        ),
    ]
