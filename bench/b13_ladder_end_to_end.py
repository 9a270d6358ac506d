"""Row 13: upload → DONE with the default ladder (HLS_RENDITIONS 1080,720,480,360, which gives
a 720p source the rungs 720/480/360, and STORYBOARD=true) of a 30 s 720p H.264/AAC clip,
against the raw commands that make the same outputs, one after another in a shell: ffprobe,
the thumbnail, the remux (row 1's three), the ladder command with the storyboard's tiles in
its decode (`ladder.argv` with make_ladder's arguments), and the storyboard command that
joins the tiles into the sprite: ≤ 1.10.

The baseline's argv come from clipo_gql (media.py, hls/ladder.py, hls/storyboard.py), planned
from a probe of the clip made before any timing; only the sprite command is written out
here, as `Media._sprite` builds it inline. Not in the baseline: the master playlist and the
WebVTT (Python in our job, a few milliseconds).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from bench.b1_end_to_end import as_script, mp4_commands, one_upload, shell
from bench.b11_ladder import check_rungs, ladder_argv
from bench.common import Context, Result, alternate, dev_server, make_clip
from clipo_gql.hls import ladder, storyboard
from clipo_gql.hls.storyboard import StoryboardPlan
from clipo_gql.media import TILES, TILES_PREFIX, Media, _input, _output
from clipo_gql.settings import Settings
from clipo_gql.storage import STORYBOARD_SPRITE

TARGET = 1.10


def sprite_argv(
    media: Media, tiles: Path, count: int, plan: StoryboardPlan, sprite: Path
) -> list[str]:
    """`Media._sprite`'s command: the `count` tiles in folder `tiles` into one JPEG."""
    return [
        media.settings.ffmpeg_binary, "-nostdin", "-hide_banner", "-v", "error", "-nostats",
        "-protocol_whitelist", "file", "-f", "image2", "-i", _input(tiles / TILES),
        "-frames:v", "1", "-vf", plan.sprite_filter(count),
        "-q:v", "4", "-f", "mjpeg", "-y", _output(sprite),
    ]  # fmt: skip


async def run(ctx: Context) -> list[Result]:
    seconds = 2.0 if ctx.smoke else 30.0
    size = "320x240" if ctx.smoke else "1280x720"
    clip = make_clip(ctx.workdir / "b13-clip.mp4", seconds=seconds, size=size)
    size_mb = clip.stat().st_size / 1e6
    media = Media(Settings())
    probe = await media.probe(clip)
    # The same environment as the dev server's (dev_server() passes ours on): its ladder.
    if not media.settings.hls_heights or not media.settings.storyboard:
        raise RuntimeError("row 13 needs the ladder and the storyboard on (HLS_RENDITIONS)")
    rungs = ladder.plan_rungs(probe, media.settings.hls_heights)
    plan = storyboard.plan(probe, ladder.display_aspect(probe))
    out = ctx.workdir / "baseline-13"
    hls = out / "hls"
    commands = [
        *mp4_commands(clip, out, copy=True, duration=seconds),
        ladder_argv(media, clip, hls, probe, rungs, plan),
        sprite_argv(media, hls, plan.tiles, plan, out / STORYBOARD_SPRITE),
    ]
    script = as_script(commands)

    async def baseline() -> float:
        shutil.rmtree(out, ignore_errors=True)
        hls.mkdir(parents=True)
        took = await shell(script)
        check_rungs(hls, rungs)
        tiles = sum(1 for p in hls.iterdir() if p.name.startswith(TILES_PREFIX))
        if tiles != plan.tiles or not (out / STORYBOARD_SPRITE).is_file():
            # make_ladder joins as many tiles as ffmpeg wrote: the sprite would differ.
            raise RuntimeError(f"the ladder wrote {tiles} tiles, the plan says {plan.tiles}")
        return took

    async with dev_server(ctx) as service, httpx.AsyncClient(timeout=600) as http:
        await one_upload(http, service, clip)  # warm-up: imports, first connections
        await baseline()
        ours, base = await alternate(ctx.repeats, lambda: one_upload(http, service, clip), baseline)
    return [
        Result(
            number=13, name=f"upload → DONE with the ladder, {seconds:.0f} s {size}", unit="s",
            ours=ours, baseline=base,
            baseline_name="ffprobe + thumbnail + MP4 + ladder + storyboard commands in a shell",
            higher_is_better=False, target=TARGET,
            notes=[
                f"clip: {clip.name}, {size_mb:.1f} MB; default HLS_RENDITIONS and STORYBOARD: "
                f"rungs {', '.join(r.name for r in rungs)}, a storyboard of {plan.tiles} tiles "
                "made in the ladder's decode; ours is followed over the subscription to DONE",
            ],
        )
    ]  # fmt: skip
