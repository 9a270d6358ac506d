"""Rows 4 and 14 as compose.yaml deploys them: the API behind nginx (deploy/nginx.conf) with
ACCEL_REDIRECT_PREFIX, against nginx serving the same files directly (issue 17's targets:
≥ 0.9× for 50 concurrent 1 MiB ranges of /stream, ≥ 0.5× for HLS segment GETs).

Ours: each request goes through nginx to `clipo-gql dev`, which checks it (the video is DONE,
the path is one it generated, the file is there) and answers with an empty body and
`X-Accel-Redirect`; nginx then sends the file with sendfile. Baseline: bench/nginx.py's static
server sending the same files from a symlink. One nginx worker process each; the loads are
rows 4 and 14's own (curl, `--parallel --parallel-max 50`, the same requests for both sides),
the two sides alternating, the order swapped each round.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.b3_upload import cpu_seconds
from bench.b4_stream import CONCURRENCY, MiB, ranges
from bench.b14_segments import fetch
from bench.common import Context, Result, dev_server, make_clip, upload
from bench.common import until_final as until_done
from bench.nginx import ACCEL_PREFIX, deployed, nginx

Rates = tuple[float, float]  # (req/s, MB/s)


async def side_by_side(
    repeats: int,
    ours: Callable[[int], Awaitable[Rates]],
    baseline: Callable[[int], Awaitable[Rates]],
) -> tuple[list[Rates], list[Rates]]:
    """As common.alternate, with the round's seed passed on: each pair makes the same requests."""
    a: list[Rates] = []
    b: list[Rates] = []
    for seed in range(repeats):
        if seed % 2:
            b.append(await baseline(seed))
            a.append(await ours(seed))
        else:
            a.append(await ours(seed))
            b.append(await baseline(seed))
    return a, b


async def run(ctx: Context) -> list[Result]:
    # Smoke: one small rung keeps the ladder quick; the MP4 must still exceed 1 MiB.
    seconds, frame, heights = (6.0, "1280x720", "360") if ctx.smoke else (30.0, "1280x720", None)
    count = 100 if ctx.smoke else 2000
    clip = make_clip(ctx.workdir / "b4-14-clip.mp4", seconds=seconds, size=frame)
    env = {"ACCEL_REDIRECT_PREFIX": ACCEL_PREFIX}
    if heights is not None:
        env["HLS_RENDITIONS"] = heights
    async with dev_server(ctx, **env) as service, httpx.AsyncClient(timeout=600) as http:
        video_id = await upload(http, service, clip)
        status = await until_done(service, video_id)
        if status != "DONE":
            raise RuntimeError(f"video {video_id} ended {status}")
        folder = service.media / "videos" / video_id
        processed = folder / "video.mp4"
        size = processed.stat().st_size
        if size < MiB:
            raise RuntimeError(f"the processed file is too small for 1 MiB ranges: {size}")
        segments = sorted(
            (str(p.relative_to(folder / "hls")), p.stat().st_size)
            for p in (folder / "hls").glob("*/seg*.m4s")
        )
        with deployed(ctx.workdir, [urlsplit(service.url).netloc], service.media) as front:
            async with nginx(ctx) as server:
                (server.root / "video.mp4").symlink_to(processed)
                (server.root / "hls").symlink_to(folder / "hls")
                stream = {
                    "ours": f"{front.url}/stream/{video_id}",
                    "nginx": f"{server.url}/video.mp4",
                }
                hls = {"ours": f"{front.url}/hls/{video_id}", "nginx": f"{server.url}/hls"}
                for side in ("ours", "nginx"):  # warm-up: first requests, the page cache
                    await ranges(stream[side], size, CONCURRENCY, seed=-1)
                    await fetch(hls[side], segments, CONCURRENCY, seed=-1)

                cpu = {(row, side): 0.0 for row in (4, 14) for side in ("ours", "nginx")}

                def pids(side: str) -> list[int]:
                    if side == "ours":  # nginx in front and the API behind it
                        return [*front.worker_pids(), service.proc.pid]
                    return server.worker_pids()

                def timed(row: int, side: str) -> Callable[[int], Awaitable[Rates]]:
                    async def measure(seed: int) -> Rates:
                        started = cpu_seconds(pids(side))
                        if row == 4:
                            rates = await ranges(stream[side], size, count, seed)
                        else:
                            rates = await fetch(hls[side], segments, count, seed)
                        cpu[row, side] += cpu_seconds(pids(side)) - started
                        return rates

                    return measure

                started = time.monotonic()
                range_ours, range_nginx = await side_by_side(
                    ctx.repeats, timed(4, "ours"), timed(4, "nginx")
                )
                seg_ours, seg_nginx = await side_by_side(
                    ctx.repeats, timed(14, "ours"), timed(14, "nginx")
                )
                took = time.monotonic() - started
                accel_answers, kept = _accel_answers(front.prefix / "access.log")
    per_request = {key: spent / (count * ctx.repeats) * 1e3 for key, spent in cpu.items()}
    rungs = sorted({Path(name).parent.name for name, _ in segments})
    setup = (
        f"through nginx: deploy/nginx.conf rendered for loopback (bench/nginx.py `render`: "
        "only its listen address, upstream, alias, pid, logs and worker count changed; keepalive "
        "to the API), one worker process, in front of `clipo-gql dev` with "
        f"ACCEL_REDIRECT_PREFIX={ACCEL_PREFIX}; {accel_answers} requests in its access log were "
        f"answered with X-Accel-Redirect and sent by nginx, {kept} of them with an answer nginx "
        "kept (the API asked once a second per URL: README, Kept answers); baseline: "
        "bench/nginx.py's "
        f"static nginx (one worker, sendfile) from symlinks to the same files; {took:.0f} s of "
        "measured load"
    )

    def cpu_note(row: int) -> str:
        return (
            f"server CPU time (user + system) per request: ours {per_request[row, 'ours']:.2f} ms "
            f"(nginx worker + API process), nginx alone {per_request[row, 'nginx']:.2f} ms"
        )

    name4 = f"/stream random 1 MiB ranges, {CONCURRENCY} concurrent, nginx + X-Accel-Redirect"
    name14 = f"/hls segment GETs, {CONCURRENCY} concurrent, nginx + X-Accel-Redirect"
    return [
        _result(4, name4, "req/s", range_ours, range_nginx, 0, [
            f"nginx + X-Accel-Redirect: the processed MP4 of a {seconds:.0f} s {frame} clip, "
            f"{size / 1e6:.1f} MB; {count} GETs of random 1 MiB ranges (row 4's load); "
            f"{cpu_note(4)}",
            setup,
        ]),
        _result(4, name4, "MB/s", range_ours, range_nginx, 1, []),
        _result(14, name14, "req/s", seg_ours, seg_nginx, 0, [
            f"nginx + X-Accel-Redirect: the same clip's ladder, {len(segments)} segments in "
            f"{', '.join(rungs)}; {count} GETs of whole segments picked at random (row 14's "
            f"load); {cpu_note(14)}",
            setup,
        ]),
        _result(14, name14, "MB/s", seg_ours, seg_nginx, 1, []),
    ]  # fmt: skip


TARGETS = {4: 0.9, 14: 0.5}


def _result(
    row: int, name: str, unit: str, ours: list[Rates], theirs: list[Rates], index: int,
    notes: list[str],
) -> Result:  # fmt: skip
    return Result(
        number=row, name=name, unit=unit, ours=[r[index] for r in ours],
        baseline=[r[index] for r in theirs], baseline_name="nginx static file, sendfile",
        higher_is_better=True, target=TARGETS[row], notes=notes,
    )  # fmt: skip


def _accel_answers(log: Path) -> tuple[int, int]:
    """Requests answered with X-Accel-Redirect, nginx sending the file (the access log's
    `accel=` field: proof that the bytes did not go through the API), and how many of those
    were a kept answer (`answer=HIT`: the API was not asked)."""
    sent = [line for line in log.read_text().splitlines() if f"accel={ACCEL_PREFIX}" in line]
    return len(sent), sum(1 for line in sent if line.endswith("answer=HIT"))
