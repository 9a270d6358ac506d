"""Benchmark 7: worker throughput, 40 short clips through two concurrent jobs, against the
same per-clip commands through `xargs -P 2`.

As deployed: one `clipo-gql serve` and two `clipo-gql worker` processes (one job each) on a
private FerretDB (CLIPO_FERRETDB_BIN, built by scripts/ferretdb-env). Without it, the jobs run
in `clipo-gql dev` with WORKER_CONCURRENCY=2 on the stand-in: the same worker code, two jobs at
once, one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import time
from pathlib import Path

import httpx

from bench.b1_end_to_end import NO_HLS, shell, shell_script
from bench.common import (
    Context,
    Result,
    Service,
    alternate,
    deployment,
    dev_server,
    ferretdb,
    make_clip,
    upload,
)
from bench.common import until_final as until_done


async def batch(http: httpx.AsyncClient, service: Service, clips: list[Path]) -> float:
    """Clips per minute: every clip uploaded at once, until the last one is DONE."""
    started = time.perf_counter()
    ids = await asyncio.gather(*(upload(http, service, clip) for clip in clips))
    statuses = await asyncio.gather(*(until_done(service, video_id) for video_id in ids))
    took = time.perf_counter() - started
    if set(statuses) != {"DONE"}:
        raise RuntimeError(f"not all DONE: {statuses}")
    return len(clips) / took * 60


async def xargs(ctx: Context, clips: list[Path], seconds: float) -> float:
    scripts = []
    for n, clip in enumerate(clips):
        out = ctx.workdir / f"xargs-{n}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        scripts.append(shell_script(clip, out, copy=True, duration=seconds))
    listing = ctx.workdir / "xargs-scripts"
    listing.write_text("\n".join(scripts) + "\n")
    took = await shell(f"xargs -P 2 -d '\\n' -n 1 sh -c < {shlex.quote(str(listing))}")
    return len(clips) / took * 60


async def run(ctx: Context) -> list[Result]:
    count = 4 if ctx.smoke else 40
    seconds = 2.0
    size = "320x240" if ctx.smoke else "640x360"
    # One file per clip: each upload is its own video, as 40 users would send.
    source = make_clip(ctx.workdir / "short.mp4", seconds=seconds, size=size)
    clips = []
    for n in range(count):
        clip = ctx.workdir / f"short-{n:02}.mp4"
        shutil.copyfile(source, clip)
        clips.append(clip)
    async with contextlib.AsyncExitStack() as stack:
        mongodb_url = await stack.enter_async_context(ferretdb(ctx))
        if mongodb_url is not None:
            where = "2 × clipo-gql worker (WORKER_CONCURRENCY=1 each) + clipo-gql serve, FerretDB"
            service = await stack.enter_async_context(
                deployment(ctx, mongodb_url, 2, WORKER_CONCURRENCY="1", **NO_HLS)
            )
        else:
            where = "clipo-gql dev (WORKER_CONCURRENCY=2) on the stand-in: no FerretDB built"
            service = await stack.enter_async_context(
                dev_server(ctx, WORKER_CONCURRENCY="2", **NO_HLS)
            )
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=600))
        ours, baseline = await alternate(
            ctx.repeats,
            lambda: batch(http, service, clips),
            lambda: xargs(ctx, clips, seconds),
        )
    return [
        Result(
            number=7, name=f"{count} clips of {seconds:.0f} s {size}, 2 at a time",
            unit="clips/min",
            ours=ours, baseline=baseline, baseline_name="the same commands via xargs -P 2",
            higher_is_better=True, target=0.9,
            notes=[
                f"jobs run in {where}; HLS_RENDITIONS= STORYBOARD=false (no ladder, as the"
                " xargs commands)"
            ],
        )
    ]  # fmt: skip
