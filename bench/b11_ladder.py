"""Row 11: the HLS ladder of a 60 s 1080p H.264/AAC clip, rungs 1080/720/480/360 (the default
HLS_RENDITIONS), made three ways, the order rotated each round:

- ours: `Media.make_ladder`, the function the job calls (the one ffmpeg, then the master
  playlist measured from the segments), in this process, without a storyboard;
- 11a: the very same ffmpeg command in a shell, its argv from `ladder.argv` with the
  arguments make_ladder passes (encoders.py's x264/AAC settings): ours ÷ it ≤ 1.05;
- 11b: the naive way, four ffmpeg runs one after another, one per rung (`ladder.argv` with
  that rung alone: same encoder, same segments), each decoding the whole source. The row is
  the speed-up of decoding once, naive time ÷ our time ≥ 1.3, reported as ladders per hour
  so that the table's ratio is that speed-up;
- 11c: a source already browser-safe at the top rung's size (60 s 720p H.264 at 2.5 Mb/s, a
  keyframe every 2 s), rungs 720/480/360: `Media.make_ladder`, which copies that rung, vs the
  same ladder with every rung encoded (`ladder.argv(copy_top=False)` in a shell). The ratio
  is the speed-up of copying (ladders per hour); ≥ 1 is what keeps the copy.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.b1_end_to_end import as_script, shell
from bench.common import Context, Result, ffmpeg, make_clip
from clipo_gql.hls import ladder
from clipo_gql.hls.ladder import Rung
from clipo_gql.hls.storyboard import StoryboardPlan
from clipo_gql.media import SAFE_INPUT_FLAGS, TILES, Media, ProbeResult, _input, _output
from clipo_gql.settings import Settings

# The default HLS_RENDITIONS; the smoke run's tiny clip gets four small rungs instead.
HEIGHTS = [1080, 720, 480, 360]
SMOKE_HEIGHTS = [240, 180, 120, 90]
SHELL_TARGET = 1.05
SPEEDUP_TARGET = 1.3
COPY_HEIGHTS = [720, 480, 360]
SMOKE_COPY_HEIGHTS = [240, 180, 120]
COPY_TARGET = 1.0


def ladder_argv(
    media: Media,
    src: Path,
    out: Path,
    probe: ProbeResult,
    rungs: list[Rung],
    plan: StoryboardPlan | None = None,
    copy_top: bool = False,
) -> list[str]:
    """The argv `Media.make_ladder` runs, writing into the folder `out` (which must exist)."""
    s = media.settings
    return ladder.argv(
        ffmpeg=s.ffmpeg_binary, safe_input=list(SAFE_INPUT_FLAGS), source=_input(src),
        out_dir=str(out.absolute()), rungs=rungs, probe=probe,
        segment_seconds=s.hls_segment_seconds, storyboard=plan,
        tiles=_output(out / TILES) if plan is not None else None, copy_top=copy_top,
    )  # fmt: skip


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def check_rungs(folder: Path, rungs: list[Rung]) -> None:
    for rung in rungs:
        if not any((folder / rung.name).glob("seg*.m4s")):
            raise RuntimeError(f"no segments in {folder / rung.name}")


async def rotate(
    repeats: int, sides: list[tuple[str, Callable[[], Awaitable[float]]]]
) -> dict[str, list[float]]:
    """`alternate` for three sides: each round starts one side later, so none is always
    first (cold) or last (after the others heated the machine)."""
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    for round_ in range(repeats):
        k = round_ % len(sides)
        for name, side in sides[k:] + sides[:k]:
            times[name].append(await side())
    return times


async def run(ctx: Context) -> list[Result]:
    return [*await one_decode(ctx), await copied_top_rung(ctx)]


async def copied_top_rung(ctx: Context) -> Result:
    seconds = 2.0 if ctx.smoke else 60.0
    size = "320x240" if ctx.smoke else "1280x720"
    clip = ctx.workdir / "b11c-clip.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "60",
        "-maxrate", "80k" if ctx.smoke else "2500k",
        "-bufsize", "80k" if ctx.smoke else "5000k", "-c:a", "aac",
        "-shortest", str(clip),
    )  # fmt: skip
    media = Media(Settings())
    probe = await media.probe(clip)
    rungs = ladder.plan_rungs(probe, SMOKE_COPY_HEIGHTS if ctx.smoke else COPY_HEIGHTS)
    gap = await media.keyframe_gap(clip, probe.duration)
    if not ladder.copyable_top(probe, rungs[0], True) or not ladder.keyframes_fit(
        gap, media.settings.hls_segment_seconds
    ):
        raise RuntimeError(f"the clip's top rung is not copyable (keyframe gap {gap})")
    dest = ctx.workdir / "b11c-ours"
    encoded = as_script([ladder_argv(media, clip, ctx.workdir / "b11c-shell", probe, rungs)])

    async def no_progress(_ratio: float) -> None:
        pass

    async def ours() -> float:
        shutil.rmtree(dest, ignore_errors=True)
        started = time.perf_counter()
        await media.make_ladder(clip, dest, probe, rungs, None, no_progress)
        took = time.perf_counter() - started
        check_rungs(dest, rungs)
        return 3600 / took

    async def every_rung_encoded() -> float:
        out = fresh(ctx.workdir / "b11c-shell")
        took = await shell(encoded)
        check_rungs(out, rungs)
        return 3600 / took

    times = await rotate(ctx.repeats, [("ours", ours), ("encoded", every_rung_encoded)])
    return Result(
        number=11, name=f"HLS ladder of a browser-safe {size}: top rung copied vs encoded",
        unit="ladders/h", ours=times["ours"], baseline=times["encoded"],
        baseline_name="the same ladder with every rung encoded, one ffmpeg in a shell",
        higher_is_better=True, target=COPY_TARGET,
        notes=[
            f"clip: {seconds:.0f} s {size} H.264 (keyframe every 2 s, ≤ 2.5 Mb/s)/AAC; rungs "
            + ", ".join(r.name for r in rungs)
            + "; ours is Media.make_ladder (copies the top rung, the others forced to its "
            "keyframes), no storyboard; the ratio is the speed-up of copying",
        ],
    )  # fmt: skip


async def one_decode(ctx: Context) -> list[Result]:
    seconds = 2.0 if ctx.smoke else 60.0
    size = "320x240" if ctx.smoke else "1920x1080"
    clip = make_clip(ctx.workdir / "b11-clip.mp4", seconds=seconds, size=size)
    media = Media(Settings())
    probe = await media.probe(clip)
    rungs = ladder.plan_rungs(probe, SMOKE_HEIGHTS if ctx.smoke else HEIGHTS)
    if len(rungs) != 4:
        raise RuntimeError(f"expected four rungs, planned {rungs}")
    dest = ctx.workdir / "b11-ours"
    one = as_script([ladder_argv(media, clip, ctx.workdir / "b11-shell", probe, rungs)])
    naive = as_script([
        ladder_argv(media, clip, ctx.workdir / f"b11-naive-{rung.name}", probe, [rung])
        for rung in rungs
    ])  # fmt: skip

    async def no_progress(_ratio: float) -> None:
        pass

    async def ours() -> float:
        shutil.rmtree(dest, ignore_errors=True)
        started = time.perf_counter()
        measured = await media.make_ladder(clip, dest, probe, rungs, None, no_progress)
        took = time.perf_counter() - started
        if len(measured) != len(rungs):
            raise RuntimeError(f"make_ladder measured {len(measured)} rungs")
        check_rungs(dest, rungs)
        return took

    async def one_command() -> float:
        out = fresh(ctx.workdir / "b11-shell")
        took = await shell(one)
        check_rungs(out, rungs)
        return took

    async def once_per_rung() -> float:
        outs = [fresh(ctx.workdir / f"b11-naive-{rung.name}") for rung in rungs]
        took = await shell(naive)
        for out, rung in zip(outs, rungs, strict=True):
            check_rungs(out, [rung])
        return took

    # No warm-up round: one costs minutes here, and there is nothing to warm that the
    # first ffmpeg does not (the clip was just written, so it is in the page cache).
    times = await rotate(
        ctx.repeats, [("ours", ours), ("shell", one_command), ("naive", once_per_rung)]
    )
    ladder_text = ", ".join(f"{r.name} ≤ {r.maxrate_kbps} kbps" for r in rungs)
    clip_note = (
        f"clip: {seconds:.0f} s {size} H.264/AAC, {clip.stat().st_size / 1e6:.1f} MB; "
        f"rungs {ladder_text}, {media.settings.hls_segment_seconds} s fMP4 segments, "
        "no storyboard; ours, the one command and the four commands in rotating order"
    )
    per_hour = {name: [3600 / t for t in values] for name, values in times.items()}
    median = statistics.median(times["ours"])
    naive_median = statistics.median(times["naive"])
    return [
        Result(
            number=11, name=f"HLS ladder of {seconds:.0f} s {size}, 4 rungs", unit="s",
            ours=times["ours"], baseline=times["shell"],
            baseline_name="the same single ffmpeg command in a shell",
            higher_is_better=False, target=SHELL_TARGET,
            notes=[
                clip_note,
                "ours: Media.make_ladder in the benchmark's process (progress callback a "
                "no-op: the job's would write MongoDB), ffmpeg then master.m3u8 measured "
                "from the segments; the shell runs ladder.argv with the same arguments",
            ],
        ),
        Result(
            number=11, name="HLS ladder, decoded once vs once per rung", unit="ladders/h",
            ours=per_hour["ours"], baseline=per_hour["naive"],
            baseline_name="four ffmpeg runs in a shell, one per rung",
            higher_is_better=True, target=SPEEDUP_TARGET,
            notes=[
                f"decoding once: ours {median:.1f} s against {naive_median:.1f} s for the "
                "four runs (medians); the ratio is the speed-up, naive ÷ ours; each naive "
                "run is ladder.argv with its rung alone (its own audio encode, as a "
                "separate run needs)",
            ],
        ),
    ]  # fmt: skip
