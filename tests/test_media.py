from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clipo_gql.errors import ProcessingError, UnsupportedMediaError
from clipo_gql.media import SAFE_INPUT_FLAGS, Media, ProbeResult, plan_streams
from clipo_gql.settings import Settings
from tests.clips import Clips, make_clip, rotate_clip


@pytest.fixture
def media() -> Media:
    return Media(Settings())


async def tool_output(*argv: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out


async def stream_info(path: Path) -> dict[str, Any]:
    """The first video stream, by plain ffprobe (also for JPEGs, which Media refuses)."""
    out = await tool_output(
        "ffprobe", "-v", "error", "-select_streams", "V:0", "-show_streams", "-of", "json",
        str(path),
    )  # fmt: skip
    stream: dict[str, Any] = json.loads(out)["streams"][0]
    return stream


async def edge_colours(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean RGB of the top and bottom 5 % of the first frame as a player shows it."""
    info = await stream_info(path)
    rotated = any(sd.get("rotation") in (90, -90) for sd in info.get("side_data_list", []))
    w, h = (info["height"], info["width"]) if rotated else (info["width"], info["height"])
    raw = await tool_output(
        "ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    )  # fmt: skip
    assert len(raw) == w * h * 3
    band = max(1, h // 20) * w * 3

    def mean(chunk: bytes) -> tuple[float, ...]:
        return tuple(sum(chunk[i::3]) / (len(chunk) / 3) for i in range(3))

    return mean(raw[:band]), mean(raw[-band:])


def assert_upright(top: tuple[float, ...], bottom: tuple[float, ...]) -> None:
    # testsrc2's bars run red..cyan left to right; turned 90° clockwise, red is on top.
    assert hue(top) == "red", top
    assert hue(bottom) == "cyan", bottom


def hue(rgb: tuple[float, ...]) -> str:
    names = {"r": "red", "gb": "cyan", "rgb": "white", "": "black"}
    key = "".join(c for c, v in zip("rgb", rgb, strict=True) if v > 128)
    return names.get(key, key)


def top_level_boxes(path: Path) -> list[str]:
    boxes, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size == 0:
            break
        pos += size
    return boxes


def leftovers(folder: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p not in keep)


class Recorder:
    def __init__(self) -> None:
        self.values: list[float] = []

    async def __call__(self, value: float) -> None:
        self.values.append(value)


# --- probe ------------------------------------------------------------------------------------


def test_safe_flags_carry_the_allow_lists():
    flags = dict(zip(SAFE_INPUT_FLAGS[::2], SAFE_INPUT_FLAGS[1::2], strict=True))
    assert flags["-protocol_whitelist"] == "file"
    assert flags["-format_whitelist"].split(",")[:6] == ["mov", "mp4", "m4a", "3gp", "3g2", "mj2"]
    assert "hls" not in flags["-format_whitelist"]
    assert "concat" not in flags["-format_whitelist"]
    assert int(flags["-probesize"]) > 0
    assert int(flags["-analyzeduration"]) > 0


async def test_probe_h264_aac(media: Media, clips: Clips):
    probe = await media.probe(clips.h264_aac)
    assert probe.duration == pytest.approx(2.0, abs=0.1)
    assert probe.duration_text == "00:00:02"
    assert (probe.width, probe.height, probe.rotation) == (320, 240, 0)
    assert (probe.coded_width, probe.coded_height) == (320, 240)
    assert (probe.video_codec, probe.audio_codec, probe.pix_fmt) == ("h264", "aac", "yuv420p")
    assert probe.frame_rate == 25.0
    assert probe.format_name == "mov,mp4,m4a,3gp,3g2,mj2"
    assert probe.bit_rate is not None
    assert probe.bit_rate > 10_000
    assert "filename" not in probe.raw["format"]
    assert str(clips.dir) not in json.dumps(probe.raw)
    assert [s["codec_type"] for s in probe.raw["streams"]] == ["video", "audio"]
    assert plan_streams(probe) == (True, True)


async def test_probe_vp9_opus_and_no_audio(media: Media, clips: Clips):
    webm = await media.probe(clips.vp9_opus)
    assert (webm.video_codec, webm.audio_codec) == ("vp9", "opus")
    assert webm.format_name == "matroska,webm"
    assert webm.duration == pytest.approx(2.0, abs=0.1)
    assert (webm.width, webm.height) == (320, 240)
    assert plan_streams(webm) == (False, False)

    silent = await media.probe(clips.h264_noaudio)
    assert silent.audio_codec is None
    assert plan_streams(silent) == (True, False)


async def test_probe_reports_displayed_size_of_rotated_clip(media: Media, clips: Clips):
    probe = await media.probe(clips.rotated)
    assert probe.rotation == 90
    assert (probe.width, probe.height) == (240, 320)
    assert (probe.coded_width, probe.coded_height) == (320, 240)


async def test_probe_odd_size_and_short(media: Media, clips: Clips):
    odd = await media.probe(clips.odd_size)
    assert (odd.width, odd.height, odd.pix_fmt) == (321, 241, "yuv444p")
    assert plan_streams(odd) == (False, True)
    short = await media.probe(clips.short)
    assert 0 < short.duration < 0.25


def test_duration_text():
    probe = ProbeResult(
        raw={}, duration=165.4, width=None, height=None, rotation=0, video_codec=None,
        audio_codec=None, pix_fmt=None, frame_rate=None, bit_rate=None, format_name=None,
        coded_width=None, coded_height=None,
    )  # fmt: skip
    assert probe.duration_text == "00:02:45"
    assert dataclasses.replace(probe, duration=3 * 3600 + 61.9).duration_text == "03:01:01"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not_video", "Not a video file we can read (Invalid data found when processing input)"),
        ("truncated", "Not a video file we can read (Invalid data found when processing input)"),
        ("audio_only", "The file has no video stream"),
        ("hls_as_mp4", "Not a video file we can read (the 'hls' format is not accepted)"),
        ("concat_as_mp4", "Not a video file we can read (the 'concat' format is not accepted)"),
    ],
)
async def test_probe_refuses_with_a_human_reason(media: Media, clips: Clips, name, message):
    with pytest.raises(UnsupportedMediaError) as caught:
        await media.probe(getattr(clips, name))
    assert caught.value.message == message
    assert "/" not in caught.value.message


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"max_dimension": 100}, "320x240; the limit is 100 px a side"),
        ({"max_pixels": 50_000}, "50,000 pixels"),
        ({"max_frame_rate": 24}, "frame rate is 25 fps; the limit is 24"),
        ({"max_duration_seconds": 1}, "00:00:02 long; the limit is 00:00:01"),
        ({"max_streams": 1}, "2 streams; at most 1"),
    ],
)
async def test_probe_refuses_out_of_bounds(clips: Clips, limits, fragment):
    with pytest.raises(UnsupportedMediaError, match=fragment):
        await Media(Settings(**limits)).probe(clips.h264_aac)


# --- thumbnail --------------------------------------------------------------------------------


async def test_thumbnail_is_a_320_px_jpeg(media: Media, clips: Clips, tmp_path: Path):
    dest = tmp_path / "thumb.jpg"
    await media.thumbnail(clips.h264_aac, dest, 2.0)
    assert dest.read_bytes()[:2] == b"\xff\xd8"
    info = await stream_info(dest)
    assert (info["codec_name"], info["width"], info["height"]) == ("mjpeg", 320, 240)
    assert leftovers(tmp_path, dest) == []


async def test_thumbnail_of_rotated_clip_is_upright(media: Media, clips: Clips, tmp_path: Path):
    dest = tmp_path / "thumb.jpg"
    await media.thumbnail(clips.rotated, dest, 2.0)
    info = await stream_info(dest)
    assert (info["width"], info["height"]) == (320, 426)  # 240x320 displayed, aspect kept, even
    assert_upright(*await edge_colours(dest))


@pytest.mark.parametrize(("name", "duration"), [("short", 0.12), ("h264_aac", 100.0)])
async def test_thumbnail_falls_back_to_first_frame(
    media: Media, clips: Clips, tmp_path: Path, name, duration
):
    # 100 s claimed for a 2 s clip: the seek to 10 s finds no frame.
    dest = tmp_path / "thumb.jpg"
    await media.thumbnail(getattr(clips, name), dest, duration)
    assert (await stream_info(dest))["width"] == 320
    assert leftovers(tmp_path, dest) == []


# --- make_mp4 ---------------------------------------------------------------------------------


async def test_make_mp4_remuxes_h264_aac(media: Media, clips: Clips, tmp_path: Path):
    probe = await media.probe(clips.h264_aac)
    dest = tmp_path / "out.mp4"
    progress = Recorder()
    assert await media.make_mp4(clips.h264_aac, dest, probe, progress) is True
    boxes = top_level_boxes(dest)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart
    out = await media.probe(dest)
    assert (out.video_codec, out.audio_codec, out.width, out.height) == ("h264", "aac", 320, 240)
    assert out.duration == pytest.approx(2.0, abs=0.1)
    assert progress.values == sorted(progress.values)
    assert progress.values[-1] == 1.0
    assert progress.values.count(1.0) == 1
    assert leftovers(tmp_path, dest) == []


@pytest.mark.parametrize(
    ("name", "audio"), [("vp9_opus", "aac"), ("odd_size", "aac"), ("h264_noaudio", None)]
)
async def test_make_mp4_output_plays_in_browsers(
    media: Media, clips: Clips, tmp_path: Path, name, audio
):
    src = getattr(clips, name)
    probe = await media.probe(src)
    dest = tmp_path / "out.mp4"
    progress = Recorder()
    remuxed = await media.make_mp4(src, dest, probe, progress)
    assert remuxed is (name == "h264_noaudio")
    out = await media.probe(dest)
    assert (out.video_codec, out.pix_fmt, out.audio_codec) == ("h264", "yuv420p", audio)
    assert out.width is not None
    assert out.height is not None
    assert out.width % 2 == 0
    assert out.height % 2 == 0
    assert abs(out.width - probe.coded_width) <= 1  # type: ignore[operator]
    assert top_level_boxes(dest).index("moov") < top_level_boxes(dest).index("mdat")
    assert progress.values == sorted(progress.values)
    assert progress.values[-1] == 1.0
    assert all(0 <= v <= 1 for v in progress.values)
    assert leftovers(tmp_path, dest) == []


FAKE_PROGRESS = """#!/bin/sh
for arg; do last=$arg; done
printf 'x' > "${last#file:}"
echo out_time_us=N/A
echo out_time_us=500000
sleep 0.3
echo out_time_ms=1000000
echo out_time_us=1000000
sleep 0.3
echo out_time_us=3000000
echo progress=end
"""


async def test_make_mp4_progress_is_throttled_and_ends_at_one(
    media: Media, clips: Clips, tmp_path: Path, work: Path
):
    script = tmp_path / "fake-ffmpeg"
    script.write_text(FAKE_PROGRESS)
    script.chmod(0o755)
    probe = await media.probe(clips.h264_aac)  # 2 s
    progress = Recorder()
    fake = Media(Settings(ffmpeg_binary=str(script)))
    await fake.make_mp4(clips.h264_aac, work / "out.mp4", probe, progress)
    assert progress.values == [0.25, 0.5, 0.99, 1.0]
    assert leftovers(work) == ["out.mp4"]


async def test_make_mp4_failure_says_why_without_paths(media: Media, clips: Clips, tmp_path):
    probe = await media.probe(clips.h264_aac)  # as if the file changed after probing
    with pytest.raises(ProcessingError) as caught:
        await media.make_mp4(clips.truncated, tmp_path / "out.mp4", probe, Recorder())
    assert caught.value.message == (
        "Could not convert the video (Invalid data found when processing input)"
    )
    assert leftovers(tmp_path) == []


async def test_make_mp4_refuses_output_over_the_cap(clips: Clips, tmp_path: Path):
    media = Media(Settings(max_output_bytes=50_000))
    probe = await media.probe(clips.h264_aac)
    with pytest.raises(ProcessingError, match="larger than 48.8 KiB"):
        await media.make_mp4(clips.h264_aac, tmp_path / "out.mp4", probe, Recorder())
    assert leftovers(tmp_path) == []


async def test_rotated_clip_stays_upright_when_remuxed(media: Media, clips: Clips, tmp_path):
    dest = tmp_path / "out.mp4"
    probe = await media.probe(clips.rotated)
    assert await media.make_mp4(clips.rotated, dest, probe, Recorder()) is True
    out = await media.probe(dest)
    # The display matrix survives the remux (and -map_metadata -1).
    assert (out.rotation, out.width, out.height, out.coded_width) == (90, 240, 320, 320)
    assert_upright(*await edge_colours(dest))


async def test_rotated_clip_stays_upright_when_transcoded(media: Media, tmp_path: Path):
    plain = make_clip(tmp_path / "plain.mp4", pix_fmt="yuv444p", acodec=None, seconds=1)
    src = rotate_clip(plain, tmp_path / "rotated444.mp4", 90)
    probe = await media.probe(src)
    assert probe.rotation == 90
    assert plan_streams(probe) == (False, False)
    dest = tmp_path / "out.mp4"
    assert await media.make_mp4(src, dest, probe, Recorder()) is False
    out = await media.probe(dest)
    # Pixels turned upright by the decoder, and no rotation left to apply twice.
    assert (out.rotation, out.coded_width, out.coded_height) == (0, 240, 320)
    assert "side_data_list" not in out.raw["streams"][0]
    assert "rotate" not in out.raw["streams"][0].get("tags", {})
    assert_upright(*await edge_colours(dest))


# --- timeouts, cancellation, dying with the worker ----------------------------------------------

FAKE_TOOL = """#!/bin/sh
# Stands in for ffmpeg: writes a partial output, starts a child, and hangs.
for arg; do last=$arg; done
case "$last" in file:*.part) printf 'partial' > "${last#file:}";; esac
sleep 60 &
echo "$$ $!" >> "%(pids)s"
wait
"""


def fake_tool(folder: Path) -> tuple[Path, Path]:
    pids = folder / "pids"
    script = folder / "fake-ffmpeg"
    script.write_text(FAKE_TOOL % {"pids": pids})
    script.chmod(0o755)
    return script, pids


def written_pids(pids: Path) -> list[int] | None:
    text = pids.read_text() if pids.exists() else ""
    return [int(p) for p in text.split()] if text.endswith("\n") else None


async def read_pids(pids: Path) -> list[int]:
    for _ in range(200):
        if found := written_pids(pids):
            return found
        await asyncio.sleep(0.01)
    raise AssertionError("the fake tool did not start")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        # The second: it exited between opening its stat file and reading it.
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has finished running


async def assert_gone(pids: list[int]) -> None:
    # The grandchild is reaped by init, not by us: give it a moment.
    # A loaded machine (CI beside other suites) can take a while to schedule the exits.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still running: {[p for p in pids if alive(p)]}")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


async def test_thumbnail_timeout_kills_the_process_group(clips: Clips, tmp_path, work):
    script, pids = fake_tool(tmp_path)
    media = Media(Settings(ffmpeg_binary=str(script), thumbnail_timeout_seconds=0.5))
    started = time.monotonic()
    with pytest.raises(ProcessingError, match=r"^Making the thumbnail timed out after 0\.5 s$"):
        await media.thumbnail(clips.h264_aac, work / "thumb.jpg", 2.0)
    assert time.monotonic() - started < 5
    await assert_gone(await read_pids(pids))
    assert leftovers(work) == []


async def test_probe_timeout(clips: Clips, tmp_path: Path):
    script, pids = fake_tool(tmp_path)
    media = Media(Settings(ffprobe_binary=str(script), probe_timeout_seconds=0.3))
    with pytest.raises(ProcessingError, match="timed out after 0.3 s"):
        await media.probe(clips.h264_aac)
    await assert_gone(await read_pids(pids))


async def test_make_mp4_timeout(media: Media, clips: Clips, tmp_path: Path, work):
    script, pids = fake_tool(tmp_path)
    probe = await media.probe(clips.h264_aac)
    # model_copy skips validation: the setting's floor of 10 s is for operators, not tests.
    settings = Settings(ffmpeg_binary=str(script)).model_copy(update={"job_timeout_seconds": 0.5})
    with pytest.raises(ProcessingError, match="Converting the video timed out after 0.5 s"):
        await Media(settings).make_mp4(clips.h264_aac, work / "out.mp4", probe, Recorder())
    await assert_gone(await read_pids(pids))
    assert leftovers(work) == []


async def test_cancellation_kills_the_process_group(clips: Clips, tmp_path: Path, work):
    script, pids = fake_tool(tmp_path)
    media = Media(Settings(ffmpeg_binary=str(script)))
    probe = await Media(Settings()).probe(clips.h264_aac)
    task = asyncio.create_task(media.make_mp4(clips.h264_aac, work / "out.mp4", probe, Recorder()))
    running = await read_pids(pids)
    assert all(alive(p) for p in running)
    assert [p.name.endswith(".part") for p in work.iterdir()] == [True]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_gone(running)
    assert leftovers(work) == []


@pytest.mark.parametrize("path", ["setpriv", "preexec_fn"])
async def test_tool_dies_with_the_worker(tmp_path: Path, path: str):
    """Both ways a tool gets its death signal (media._spawn_options): through setpriv, and
    the preexec_fn where setpriv is missing."""
    if path == "setpriv" and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    script, pids = fake_tool(tmp_path)
    without = "m._setpriv = lambda: None; " if path == "preexec_fn" else ""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        f"import asyncio; import clipo_gql.media as m; {without}"
        f"asyncio.run(m._run([{str(script)!r}]))",
    )  # fmt: skip
    try:
        shell, _ = await read_pids(pids)
        os.kill(worker.pid, signal.SIGKILL)  # no finally, no cleanup: only the kernel can help
        await worker.wait()
        await assert_gone([shell])
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        if pids.exists():
            # The fake's own child has no death signal of its own (ffmpeg has no children).
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pids.read_text().split()[1]), signal.SIGKILL)
