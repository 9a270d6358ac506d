"""The HLS ladder: which rungs a source gets, at which bitrates, and the one ffmpeg command
that makes them all (and the storyboard) from a single decode.

Bitrates follow Apple's HLS Authoring Specification (H.264 table, 30 fps): a rung's peak
(`-maxrate`) is the table's rate for its size, scaled by pixel count for sizes between the
table's rows, and half again above 30 fps. Under that cap x264 encodes at a constant quality
(CRF, encoders.py), so simple pictures cost less than the cap.

| height | Apple's size | kbps |
| --- | --- | --- |
| 234 | 416x234 | 145 |
| 360 | 640x360 | 365 |
| 432 | 768x432 | 1100 |
| 540 | 960x540 | 2000 |
| 720 | 1280x720 | 3000 |
| 1080 | 1920x1080 | 6000 |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from clipo_gql import encoders
from clipo_gql.hls.storyboard import StoryboardPlan

if TYPE_CHECKING:
    from clipo_gql.media import ProbeResult

# (pixels, kbps) of Apple's table, smallest first.
APPLE_TABLE = (
    (416 * 234, 145),
    (640 * 360, 365),
    (768 * 432, 1100),
    (960 * 540, 2000),
    (1280 * 720, 3000),
    (1920 * 1080, 6000),
)
HIGH_FRAME_RATE = 30.5
MASTER = "master.m3u8"
MEDIA_PLAYLIST = "index.m3u8"


@dataclass(frozen=True)
class Rung:
    width: int
    height: int
    maxrate_kbps: int

    @property
    def name(self) -> str:
        """Its folder in the ladder: `720p`."""
        return f"{self.height}p"


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def display_aspect(probe: ProbeResult) -> float:
    """Width over height as shown: rotation applied, and the sample aspect of anamorphic
    sources (a 720x576 DVD frame shown 16:9)."""
    assert probe.width
    assert probe.height
    sar = Fraction(1)
    for stream in probe.raw.get("streams", []):
        if stream.get("codec_type") == "video":
            sar = _ratio(stream.get("sample_aspect_ratio")) or sar
            break
    if probe.rotation in (90, 270):
        sar = 1 / sar
    return probe.width * float(sar) / probe.height


def _ratio(value: Any) -> Fraction | None:
    if not isinstance(value, str) or ":" not in value:
        return None
    num, _, den = value.partition(":")
    try:
        ratio = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return None
    return ratio if ratio > 0 else None


def maxrate_kbps(width: int, height: int, frame_rate: float | None) -> int:
    pixels = width * height
    # The first row at least this size (the largest for anything larger), scaled to it.
    table_pixels, kbps = next((row for row in APPLE_TABLE if pixels <= row[0]), APPLE_TABLE[-1])
    rate = kbps * pixels / table_pixels
    if frame_rate is not None and frame_rate > HIGH_FRAME_RATE:
        rate *= 1.5
    return max(100, int(math.ceil(rate)))


def plan_rungs(probe: ProbeResult, heights: list[int]) -> list[Rung]:
    """The configured heights not above the source's displayed height, highest first; a
    source smaller than every one gets a single rung at its own (even) size."""
    assert probe.height
    aspect = display_aspect(probe)
    fitting = sorted({h for h in heights if h <= probe.height}, reverse=True)
    if not fitting:
        fitting = [_even(probe.height) if probe.height >= 2 else 2]
    rungs = []
    for height in fitting:
        height = _even(height)
        width = _even(height * aspect)
        rungs.append(Rung(width, height, maxrate_kbps(width, height, probe.frame_rate)))
    return rungs


def keyframes_per_segment(segment_seconds: int) -> int:
    """How many keyframes a segment holds, evenly spaced about 2 s apart.

    A keyframe only at each segment start would leave a player that seeks or switches rung
    mid-segment decoding up to a whole segment before it shows a picture; one every ~2 s
    keeps that short, and spacing them by an exact fraction of the segment keeps every boundary
    on one."""
    return max(1, math.ceil(segment_seconds / 2))


def keyframe_interval(segment_seconds: int, frame_rate: float | None) -> int:
    """The encoder's maximum GOP in frames: one keyframe spacing, rounded up."""
    per_segment = keyframes_per_segment(segment_seconds)
    return max(1, math.ceil(segment_seconds * (frame_rate or 25) / per_segment - 1e-6))


def copyable_top(probe: ProbeResult, rung: Rung, browser_safe: bool) -> bool:
    """Whether the source's own video can be the top rung as it is (before its keyframes
    are known, `keyframes_fit`): `browser_safe` H.264 (what the MP4 remux copies) at exactly
    the rung's size, upright with square pixels, and no more bits than the rung's peak.

    Copying skips the costliest encode (measured in README § Adaptive streaming); the other
    rungs then take their keyframes from the source so that every rung still cuts at the
    same times."""
    rate = _video_bit_rate(probe)
    return (
        browser_safe
        and probe.rotation == 0
        and (probe.coded_width, probe.coded_height) == (rung.width, rung.height)
        and rate is not None
        and rate <= rung.maxrate_kbps * 1000
    )


def keyframes_fit(gap_seconds: float | None, segment_seconds: int) -> bool:
    """A copied rung's segments end at the source's keyframes: a source whose keyframes are
    further apart than a segment would give segments too long for players to switch on."""
    return gap_seconds is not None and 0 < gap_seconds <= segment_seconds


def _video_bit_rate(probe: ProbeResult) -> int | None:
    for stream in probe.raw.get("streams", []):
        if stream.get("codec_type") == "video":
            rate = stream.get("bit_rate")
            return int(rate) if isinstance(rate, str) and rate.isdigit() else probe.bit_rate
    return probe.bit_rate


def argv(
    *,
    ffmpeg: str,
    safe_input: list[str],
    source: str,
    out_dir: str,
    rungs: list[Rung],
    probe: ProbeResult,
    segment_seconds: int,
    storyboard: StoryboardPlan | None,
    tiles: str | None,
    copy_top: bool = False,
) -> list[str]:
    """One ffmpeg: decode once, `split` to every rung's `scale` (and the storyboard's tiles),
    encode each, and mux fMP4 segments with the hls muxer. Keyframes are forced at the same
    times in every rung (scene-cut keyframes off, every segment boundary among them), so all
    rungs cut at the same times. With `copy_top` the first rung is the source's video as it
    is and the others take their keyframes from it."""
    first = 1 if copy_top else 0  # the rungs that go through the filter graph
    scaled = range(first, len(rungs))
    count = len(scaled) + (1 if storyboard is not None else 0)
    labels = [f"[s{n}]" for n in range(count)]
    graph = [f"[0:V:0]split={count}{''.join(labels)}" if count > 1 else "[0:V:0]null[s0]"]
    for label, n in enumerate(scaled):
        rung = rungs[n]
        graph.append(f"[s{label}]scale=w={rung.width}:h={rung.height},setsar=1[v{n}]")
    if storyboard is not None:
        graph.append(f"[s{len(scaled)}]{storyboard.filter()}[sb]")
    has_audio = probe.audio_codec is not None
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-nostats", "-progress", "pipe:1",
        *safe_input, "-i", source,
    ]  # fmt: skip
    if count:
        cmd += ["-filter_complex", ";".join(graph)]
    for n in range(len(rungs)):
        cmd += ["-map", "0:V:0" if n < first else f"[v{n}]"]
        if has_audio:
            cmd += ["-map", "0:a:0"]
    if copy_top:
        cmd += ["-c:v:0", "copy"]
    gop = keyframe_interval(segment_seconds, probe.frame_rate)
    per_segment = keyframes_per_segment(segment_seconds)
    for n in scaled:
        stream = f"v:{n}"
        cmd += [
            *encoders.h264(stream),
            f"-profile:{stream}",
            "high",
            f"-sc_threshold:{stream}",
            "0",
        ]
        if copy_top:
            # Keyframes where the copied rung has them and nowhere else (a GOP cap of its
            # own would add keyframes the copy lacks, and the hls muxer would cut there).
            cmd += [f"-force_key_frames:{stream}", "source", f"-g:{stream}", str(gop * 1000)]
        else:
            cmd += [
                f"-g:{stream}", str(gop), f"-keyint_min:{stream}", str(gop),
                # A fraction, not a rounded decimal, so the n-th keyframe does not drift off a
                # boundary; the millisecond allows for frame times just under it (29.97 fps).
                f"-force_key_frames:{stream}",
                f"expr:gte(t,n_forced*{segment_seconds}/{per_segment}-0.001)",
            ]  # fmt: skip
        rung = rungs[n]
        cmd += [f"-maxrate:{stream}", f"{rung.maxrate_kbps}k", f"-bufsize:{stream}",
                f"{rung.maxrate_kbps * 2}k"]  # fmt: skip
    if has_audio:
        cmd += [*encoders.aac(), "-ac", "2"]
    streams = " ".join(
        f"v:{n},a:{n},name:{rung.name}" if has_audio else f"v:{n},name:{rung.name}"
        for n, rung in enumerate(rungs)
    )
    cmd += [
        "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
        "-f", "hls", "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        "-hls_fmp4_init_filename", "init.mp4",
        "-hls_segment_filename", f"{out_dir}/%v/seg%05d.m4s",
        # ffmpeg's master is read for each rung's CODECS, then replaced (playlists.py).
        "-master_pl_name", "ffmpeg-master.m3u8",
        "-var_stream_map", streams,
        f"{out_dir}/%v/{MEDIA_PLAYLIST}",
    ]  # fmt: skip
    if storyboard is not None:
        assert tiles is not None
        cmd += ["-map", "[sb]", "-frames:v", str(storyboard.tiles), *tile_output(tiles)]
    return cmd


def tile_output(pattern: str) -> list[str]:
    """The storyboard's tiles as numbered JPEGs (`pattern` has `%04d`)."""
    # passthrough: image2 would otherwise duplicate tiles to a constant frame rate.
    return ["-fps_mode", "passthrough", "-q:v", "4", "-f", "image2", "-y", pattern]
