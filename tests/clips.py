"""Test media made by ffmpeg from lavfi sources: small, fast, generated once per session.

Use the `clips` fixture (load with `pytest_plugins = ["tests.clips"]`); call `make_clip` for
anything else a test needs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"

# Fast encoder settings: the tests care about codecs and containers, not quality.
_FAST = {
    "libx264": ["-preset", "ultrafast"],
    "libvpx-vp9": ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=60,
    )


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "320x240",
    fps: int = 25,
    vcodec: str = "libx264",
    acodec: str | None = "aac",
    pix_fmt: str = "yuv420p",
    container: str | None = None,
    extra: Sequence[str] = (),
    source: str = "testsrc2",
) -> Path:
    """A `seconds` long test pattern (plus a sine tone unless `acodec` is None).

    `testsrc2` rounds odd sizes down to even ones; pass `source="testsrc"` for odd sizes.
    """
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={fps}:duration={seconds}"]
    if acodec is not None:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-map", "0:v"] + (["-map", "1:a"] if acodec is not None else [])
    args += ["-c:v", vcodec, *_FAST.get(vcodec, []), "-pix_fmt", pix_fmt]
    if acodec is not None:
        args += ["-c:a", acodec]
    if container is not None:
        args += ["-f", container]
    ffmpeg(*args, *extra, str(path))
    return path


def rotate_clip(src: Path, dest: Path, clockwise: int) -> Path:
    """Copy `src` with a display matrix that turns the picture `clockwise` degrees, like a
    phone's portrait clip (clockwise=90: ffprobe shows rotation -90)."""
    # ffmpeg 5.1 turns an output `rotate` tag into a display matrix only when stream copying,
    # and reads the tag as counterclockwise degrees.
    ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={(360 - clockwise) % 360}",
           str(dest))  # fmt: skip
    return dest


def make_audio(path: Path, *, seconds: float = 1.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", str(path))
    return path


@dataclass(frozen=True)
class Clips:
    dir: Path
    h264_aac: Path  # 2 s 320x240 25 fps H.264 yuv420p + AAC, mp4 (index at the end)
    vp9_opus: Path  # 2 s webm
    h264_noaudio: Path
    rotated: Path  # coded 320x240, displayed 240x320 (turned 90° clockwise)
    odd_size: Path  # 321x241 H.264 yuv444p: cannot be remuxed
    short: Path  # 0.1 s, a few frames
    audio_only: Path  # m4a AAC
    not_video: Path  # text
    truncated: Path  # first 30 % of h264_aac: no moov
    hls_as_mp4: Path  # an HLS playlist pointing at a local .ts, named .mp4
    concat_as_mp4: Path  # an ffconcat script pointing at h264_aac, named .mp4


def make_clips(folder: Path) -> Clips:
    folder.mkdir(parents=True, exist_ok=True)
    d = folder
    rotated_src = d / "rotated_src.mp4"
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [
            pool.submit(make_clip, d / "h264_aac.mp4"),
            pool.submit(make_clip, d / "vp9_opus.webm", vcodec="libvpx-vp9", acodec="libopus"),
            pool.submit(make_clip, d / "h264_noaudio.mp4", acodec=None),
            pool.submit(make_clip, rotated_src, acodec=None),
            pool.submit(
                make_clip, d / "odd_size.mp4", size="321x241", pix_fmt="yuv444p", source="testsrc"
            ),
            pool.submit(make_clip, d / "short.mp4", seconds=0.1),
            pool.submit(make_audio, d / "audio_only.m4a"),
        ]
        for job in jobs:
            job.result()
    rotate_clip(rotated_src, d / "rotated.mp4", 90)

    h264_aac = d / "h264_aac.mp4"
    data = h264_aac.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) * 3 // 10])
    (d / "not_video.mp4").write_text("These are my holiday notes, not a video.\n")

    ffmpeg("-i", str(h264_aac), "-c", "copy", "-f", "mpegts", str(d / "segment0.ts"))
    (d / "hls_as_mp4.mp4").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:2.0,\nsegment0.ts\n#EXT-X-ENDLIST\n"
    )
    (d / "concat_as_mp4.mp4").write_text("ffconcat version 1.0\nfile 'h264_aac.mp4'\n")

    return Clips(
        dir=d,
        h264_aac=h264_aac,
        vp9_opus=d / "vp9_opus.webm",
        h264_noaudio=d / "h264_noaudio.mp4",
        rotated=d / "rotated.mp4",
        odd_size=d / "odd_size.mp4",
        short=d / "short.mp4",
        audio_only=d / "audio_only.m4a",
        not_video=d / "not_video.mp4",
        truncated=d / "truncated.mp4",
        hls_as_mp4=d / "hls_as_mp4.mp4",
        concat_as_mp4=d / "concat_as_mp4.mp4",
    )


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))
