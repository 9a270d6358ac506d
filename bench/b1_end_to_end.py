"""Benchmarks 1 and 2: one upload until the subscription says DONE, against the same ffmpeg
commands run directly in a shell (1: remux of H.264/AAC; 2: transcode of VP9/Opus WebM).

The baseline runs exactly the commands the worker runs: the argv comes from clipo_gql.media,
so a change there changes both sides.

The HLS ladder and the storyboard (issue 14, on by default) are turned off here: these rows
measure the MP4 path they always measured; rows 12 and 13 measure it with the ladder on.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

import httpx

from bench.common import Context, Result, Service, alternate, dev_server, make_clip, upload
from bench.common import until_final as until_done
from clipo_gql.media import SAFE_INPUT_FLAGS, Media
from clipo_gql.settings import Settings

# The dev server's environment for the rows whose baseline is `shell_script` (1, 2, 7): no
# ladder, no storyboard, so its worker runs exactly those commands.
NO_HLS = {"HLS_RENDITIONS": "", "STORYBOARD": "false"}


def mp4_commands(src: Path, out: Path, *, copy: bool, duration: float) -> list[list[str]]:
    """ffprobe, the thumbnail at 10 %, the MP4: the argv of each command the worker runs."""
    media = Media(Settings())
    probe = ["ffprobe", "-hide_banner", "-v", "error", *SAFE_INPUT_FLAGS,
             "-print_format", "json", "-show_format", "-show_streams", f"file:{src}"]  # fmt: skip
    thumbnail = media._thumbnail_argv(src, out / "thumbnail.jpg", duration * 0.1)
    mp4 = media._mp4_argv(src, out / "video.mp4", copy_video=copy, copy_audio=copy)
    return [probe, thumbnail, mp4]


def as_script(commands: list[list[str]]) -> str:
    """The commands one after another in one shell, stopping at the first failure."""
    return f"( {' && '.join(shlex.join(argv) for argv in commands)} ) >/dev/null"


def shell_script(src: Path, out: Path, *, copy: bool, duration: float) -> str:
    """ffprobe, the thumbnail at 10 %, the MP4: what the worker runs, as one shell script."""
    return as_script(mp4_commands(src, out, copy=copy, duration=duration))


async def shell(script: str) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(script)
    if await proc.wait() != 0:
        raise RuntimeError(f"baseline failed: {script}")
    return time.perf_counter() - started


async def one_upload(http: httpx.AsyncClient, service: Service, clip: Path) -> float:
    started = time.perf_counter()
    video_id = await upload(http, service, clip)
    status = await until_done(service, video_id)
    took = time.perf_counter() - started
    if status != "DONE":
        raise RuntimeError(f"video ended {status}")
    return took


async def measure(
    ctx: Context, number: int, name: str, clip: Path, *, copy: bool, duration: float, target: float
) -> Result:
    size_mb = clip.stat().st_size / 1e6  # noqa: ASYNC240 - one stat, before any timing
    out = ctx.workdir / f"baseline-{number}"
    out.mkdir(exist_ok=True)
    script = shell_script(clip, out, copy=copy, duration=duration)
    async with dev_server(ctx, **NO_HLS) as service, httpx.AsyncClient(timeout=600) as http:
        await one_upload(http, service, clip)  # warm-up: imports, first connections
        await shell(script)
        ours, baseline = await alternate(
            ctx.repeats, lambda: one_upload(http, service, clip), lambda: shell(script)
        )
    return Result(
        number=number, name=name, unit="s", ours=ours, baseline=baseline,
        baseline_name="the same ffprobe + thumbnail + MP4 commands in a shell",
        higher_is_better=False, target=target,
        notes=[f"clip: {clip.name}, {size_mb:.1f} MB; HLS_RENDITIONS= STORYBOARD=false"],
    )  # fmt: skip


async def run(ctx: Context) -> list[Result]:
    seconds = 2.0 if ctx.smoke else 30.0
    size = "320x240" if ctx.smoke else "1280x720"
    h264 = make_clip(ctx.workdir / "e2e-h264.mp4", seconds=seconds, size=size)
    vp9_seconds = 2.0 if ctx.smoke else 15.0
    vp9 = make_clip(ctx.workdir / "e2e-vp9.webm", seconds=vp9_seconds, size=size, webm=True)
    return [
        await measure(
            ctx, 1, f"upload → DONE, {seconds:.0f} s {size} H.264/AAC (remux)", h264,
            copy=True, duration=seconds, target=1.15,
        ),
        await measure(
            ctx, 2, f"upload → DONE, {vp9_seconds:.0f} s {size} VP9/Opus WebM (transcode)", vp9,
            copy=False, duration=vp9_seconds, target=1.05,
        ),
    ]  # fmt: skip
