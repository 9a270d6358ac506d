"""Row 12: upload → playable with the default ladder on (HLS_RENDITIONS and STORYBOARD as they
ship): a 30 s 720p H.264/AAC clip through GraphQL multipart, as row 1, timed until the MP4's
`streamUrl` answers a Range GET with 206. The MP4 is published before the ladder starts
(processing.py), so this is the wait a viewer has, against row 1's shell baseline (the same
ffprobe + thumbnail + remux commands): ≤ 1.15.

After each timed upload the video is deleted, which cancels its ladder job, and the next
measurement waits until the dev server has no ffmpeg child left: a ladder never runs beside
a measured side.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from bench.b1_end_to_end import shell, shell_script
from bench.b3_upload import delete_ours
from bench.common import (
    Context,
    Result,
    Service,
    alternate,
    dev_server,
    make_clip,
    upload,
    video_states,
)

TARGET = 1.15
PLAYABLE = "subscription($id: ID!) { videoStatus(id: $id) { status error streamUrl } }"


async def until_playable(service: Service, video_id: str) -> str:
    """Follow the video over the subscription until it has a `streamUrl`; that URL."""
    async for video in video_states(service, PLAYABLE, video_id):
        if video["status"] == "FAILED":
            raise RuntimeError(f"video {video_id} FAILED: {video['error']}")
        if video["streamUrl"]:
            url: str = video["streamUrl"]
            return url
    raise RuntimeError(f"video {video_id}: subscription ended before playable")


def ffmpeg_children(pid: int) -> list[int]:
    """The server's ffmpeg/ffprobe children (the dev server runs the worker in-process)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                name = Path(f"/proc/{child}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            if name.startswith(("ffmpeg", "ffprobe")):
                found.append(int(child))
    return found


async def until_idle(service: Service, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while ffmpeg_children(service.proc.pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the deleted video's ffmpeg still runs after {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def one_playable(http: httpx.AsyncClient, service: Service, clip: Path) -> float:
    await until_idle(service)
    started = time.perf_counter()
    video_id = await upload(http, service, clip)
    url = await until_playable(service, video_id)
    response = await http.get(url, headers={"range": "bytes=0-1023"})
    took = time.perf_counter() - started
    if response.status_code not in (200, 206):
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")
    await delete_ours(http, service, video_id)  # cancels the ladder
    await until_idle(service)
    return took


async def run(ctx: Context) -> list[Result]:
    seconds = 2.0 if ctx.smoke else 30.0
    size = "320x240" if ctx.smoke else "1280x720"
    clip = make_clip(ctx.workdir / "b12-clip.mp4", seconds=seconds, size=size)
    size_mb = clip.stat().st_size / 1e6
    out = ctx.workdir / "baseline-12"
    out.mkdir(exist_ok=True)
    script = shell_script(clip, out, copy=True, duration=seconds)
    async with dev_server(ctx) as service, httpx.AsyncClient(timeout=600) as http:
        await one_playable(http, service, clip)  # warm-up: imports, first connections
        await shell(script)
        ours, baseline = await alternate(
            ctx.repeats, lambda: one_playable(http, service, clip), lambda: shell(script)
        )
    return [
        Result(
            number=12, name=f"upload → MP4 playable, {seconds:.0f} s {size}, ladder on",
            unit="s", ours=ours, baseline=baseline,
            baseline_name="the same ffprobe + thumbnail + MP4 commands in a shell",
            higher_is_better=False, target=TARGET,
            notes=[
                f"clip: {clip.name}, {size_mb:.1f} MB; the default HLS_RENDITIONS "
                "(1080,720,480,360) and STORYBOARD=true; timed from the upload's "
                "start to the answer of a 1 KiB Range GET of `streamUrl` (206), which the "
                "subscription reports while the ladder is still to come; each video is then "
                "deleted (its ladder cancelled) and the next side waits for no ffmpeg",
            ],
        )
    ]  # fmt: skip
