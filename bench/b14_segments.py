"""Row 14: HLS segment GETs, 50 at once, from `/hls/{id}/<rung>/segNNNNN.m4s` against nginx
sending the same files with sendfile: ≥ 0.5× nginx's throughput.

A 30 s 720p clip goes through the API with the default ladder until DONE (rungs 720/480/360,
6 s fMP4 segments); nginx then serves that very ladder folder (a symlink in its root), so
both sides send the same bytes from the same page cache. The load is row 4's: one curl
process, `--parallel --parallel-max 50`, each request a whole segment picked at random from
every rung's (the same ones in the same order for both sides), ours and nginx alternating.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx

from bench.b3_upload import cpu_seconds
from bench.b4_stream import CONCURRENCY, curl
from bench.common import Context, Result, dev_server, make_clip, upload
from bench.common import until_final as until_done
from bench.nginx import nginx

TARGET = 0.5


def picks(segments: list[tuple[str, int]], count: int, seed: int) -> list[tuple[str, int]]:
    """`count` segments (`rung/segNNNNN.m4s`, size) picked at random, the same for a seed."""
    rng = random.Random(seed)
    return [rng.choice(segments) for _ in range(count)]


async def fetch(
    base: str, segments: list[tuple[str, int]], count: int, seed: int
) -> tuple[float, float]:
    """(req/s, MB/s) of `count` segment GETs under `base`, 50 in flight; each 200 and whole."""
    picked = picks(segments, count, seed)
    config = "".join(f'url = "{base}/{name}"\noutput = "/dev/null"\n' for name, _ in picked)
    started = time.perf_counter()
    transfers = await curl(
        ["--parallel", "--parallel-max", str(CONCURRENCY), "--parallel-immediate", "-K", "-"],
        config,
    )
    took = time.perf_counter() - started
    # --parallel reports in completion order: compare them as multisets.
    if sorted(t[:2] for t in transfers) != sorted((200, size) for _, size in picked):
        bad = [t for t in transfers if t[0] != 200][:3]
        raise RuntimeError(f"{base}: {len(transfers)}/{count} segments, unexpected: {bad}")
    return count / took, sum(size for _, size in picked) / 1e6 / took


async def run(ctx: Context) -> list[Result]:
    seconds, frame = (2.0, "320x240") if ctx.smoke else (30.0, "1280x720")
    count = 100 if ctx.smoke else 2000
    clip = make_clip(ctx.workdir / "b14-clip.mp4", seconds=seconds, size=frame)
    async with dev_server(ctx) as service, httpx.AsyncClient(timeout=600) as http:
        video_id = await upload(http, service, clip)
        status = await until_done(service, video_id)
        if status != "DONE":
            raise RuntimeError(f"video {video_id} ended {status}")
        folder = service.media / "videos" / video_id / "hls"
        segments = sorted(
            (str(p.relative_to(folder)), p.stat().st_size) for p in folder.glob("*/seg*.m4s")
        )
        if not segments:
            raise RuntimeError(f"no segments in {folder}")
        rungs = sorted({Path(name).parent.name for name, _ in segments})
        async with nginx(ctx) as server:
            (server.root / "hls").symlink_to(folder)
            ours_base = f"{service.url}/hls/{video_id}"
            nginx_base = f"{server.url}/hls"
            for base in (ours_base, nginx_base):  # warm-up: first requests, the page cache
                await fetch(base, segments, CONCURRENCY, seed=-1)
            pid = service.proc.pid
            cpu = {"ours": 0.0, "nginx": 0.0}

            async def timed(
                side: str, base: str, pids: list[int], seed: int
            ) -> tuple[float, float]:
                started = cpu_seconds(pids)
                rates = await fetch(base, segments, count, seed)
                cpu[side] += cpu_seconds(pids) - started
                return rates

            # Interleaved, the order swapped each round, as alternate() does; each pair
            # fetches the same segments.
            ours: list[tuple[float, float]] = []
            theirs: list[tuple[float, float]] = []
            for seed in range(ctx.repeats):
                if seed % 2:
                    theirs.append(await timed("nginx", nginx_base, server.worker_pids(), seed))
                    ours.append(await timed("ours", ours_base, [pid], seed))
                else:
                    ours.append(await timed("ours", ours_base, [pid], seed))
                    theirs.append(await timed("nginx", nginx_base, server.worker_pids(), seed))
    total = sum(size for _, size in segments)
    per_request = {side: spent / (count * ctx.repeats) * 1e3 for side, spent in cpu.items()}
    notes = [
        f"files: the ladder of a {seconds:.0f} s {frame} clip (default HLS_RENDITIONS): "
        f"{len(segments)} segments in {', '.join(rungs)}, {total / len(segments) / 1e6:.2f} MB "
        "on average, served by nginx from a symlink to the same folder (page cache warm for "
        "both); nginx: one worker process, sendfile on, access log on",
        f"load: one curl process, `--parallel --parallel-max {CONCURRENCY}`, {count} GETs of "
        "whole segments picked at random (the same ones for both sides), timed around the "
        f"whole run; server CPU time (user + system) per request: ours "
        f"{per_request['ours']:.2f} ms, nginx worker {per_request['nginx']:.2f} ms",
    ]
    return [
        Result(
            number=14, name=f"/hls segment GETs, {CONCURRENCY} concurrent", unit="req/s",
            ours=[r for r, _ in ours], baseline=[r for r, _ in theirs],
            baseline_name="nginx static files, sendfile", higher_is_better=True,
            target=TARGET, notes=notes,
        ),
        Result(
            number=14, name=f"/hls segment GETs, {CONCURRENCY} concurrent", unit="MB/s",
            ours=[mb for _, mb in ours], baseline=[mb for _, mb in theirs],
            baseline_name="nginx static files, sendfile", higher_is_better=True,
            target=TARGET, notes=["the same runs as the req/s row"],
        ),
    ]  # fmt: skip
