"""ffprobe/ffmpeg wrappers: the only place ffmpeg runs.

Every run on user input follows security.md ("ffmpeg / ffprobe"): a protocol and demuxer
allow-list, bounded probing, `file:` inputs we generated, a wall-clock limit, an output size
cap, and the whole process group killed (and reaped) on timeout or cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipo_gql import encoders
from clipo_gql.errors import ProcessingError, UnsupportedMediaError
from clipo_gql.hls import ladder, playlists
from clipo_gql.hls.ladder import Rung
from clipo_gql.hls.playlists import Measured
from clipo_gql.hls.storyboard import StoryboardPlan
from clipo_gql.settings import Settings
from clipo_gql.storage import STORYBOARD_SPRITE as SPRITE
from clipo_gql.storage import STORYBOARD_VTT as VTT
from clipo_gql.units import duration_text, human_size

log = logging.getLogger(__name__)

MiB = 1024**2

# The demuxers we accept. Everything else (hls, concat, image2, tty, ...) is refused before it
# can open other files: `-protocol_whitelist file` alone lets an HLS playlist read local files.
ALLOWED_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,ogg,mxf"
SAFE_INPUT_FLAGS: tuple[str, ...] = (
    "-protocol_whitelist", "file",
    "-format_whitelist", ALLOWED_DEMUXERS,
    "-probesize", str(20_000_000),  # bytes; 4x ffmpeg's default
    "-analyzeduration", str(20_000_000),  # microseconds
)  # fmt: skip

PROBE_OUTPUT_CAP = 16 * MiB
# Enough of a video to judge its keyframe spacing, read in well under a second.
KEYFRAME_WINDOW_SECONDS = 120
STDERR_TAIL_BYTES = 4096
THUMBNAIL_WIDTH = 320
THUMBNAIL_MAX_BYTES = 10_000_000
PROGRESS_INTERVAL_SECONDS = 0.25
# The storyboard's tiles, before they become one sprite.
TILES_PREFIX = "tile-"
TILES = f"{TILES_PREFIX}%04d.jpg"
# `dar` rather than `-2`: anamorphic sources keep their displayed aspect.
_THUMBNAIL_FILTER = (
    f"scale=w={THUMBNAIL_WIDTH}:h='max(2,trunc({THUMBNAIL_WIDTH}/dar/2)*2)',setsar=1"
)
COPYABLE_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})  # 8-bit 4:2:0; browsers play both

_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def _spawn_options(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """How a tool is started so that it dies with the worker, even a SIGKILLed one.

    Through util-linux's `setpriv --pdeathsig KILL` where it is installed: the death signal
    is set in the exec'd wrapper, so Python forks by vfork() (a preexec_fn forces a full
    fork of the worker's address space: 9 ms against 1.7 ms per spawn from a 150 MiB worker,
    measured by bench/spawn.py). Else a preexec_fn sets it. Both keep the child's own session
    (its whole group is killed on any exit but its own); setpriv, unlike the preexec_fn,
    cannot see a worker that died between the fork and its prctl, a window of microseconds.
    """
    setpriv = _setpriv()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", *argv], {}
    return argv, {"preexec_fn": functools.partial(_die_with_parent, os.getpid())}


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: have the kernel SIGKILL the child when the worker dies, even by SIGKILL.

    The signal follows the thread that forked, which is the event loop's thread.
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@dataclass(frozen=True)
class ProbeResult:
    """What ffprobe says about an accepted file. `raw` has no internal path in it."""

    raw: dict[str, Any]
    duration: float
    width: int | None  # displayed size: rotation applied
    height: int | None
    rotation: int  # clockwise degrees a player turns the picture: 0, 90, 180 or 270
    video_codec: str | None
    audio_codec: str | None
    pix_fmt: str | None
    frame_rate: float | None
    bit_rate: int | None
    format_name: str | None
    coded_width: int | None  # as stored, before rotation
    coded_height: int | None

    @property
    def duration_text(self) -> str:
        return duration_text(self.duration)


def plan_streams(probe: ProbeResult) -> tuple[bool, bool]:
    """(copy_video, copy_audio) for `make_mp4`; copy_audio is False when there is no audio."""
    copy_video = (
        probe.video_codec == "h264"
        and probe.pix_fmt in COPYABLE_PIX_FMTS
        and probe.coded_width is not None
        and probe.coded_height is not None
        and probe.coded_width % 2 == 0
        and probe.coded_height % 2 == 0
    )
    return copy_video, probe.audio_codec == "aac"


class Media:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def probe(self, path: Path) -> ProbeResult:
        s = self.settings
        argv = [
            s.ffprobe_binary,  # ffprobe 5.1 has no -nostdin; stdin is /dev/null instead
            "-hide_banner", "-v", "error", *SAFE_INPUT_FLAGS,
            "-print_format", "json", "-show_format", "-show_streams",
            _input(path),
        ]  # fmt: skip
        async with _time_limit(s.probe_timeout_seconds, "Reading the file"):
            run = await _run(argv, stdout_cap=PROBE_OUTPUT_CAP)
        if run.returncode != 0:
            raise UnsupportedMediaError(
                f"Not a video file we can read ({_reason(run.stderr, [path])})"
            )
        try:
            data = json.loads(run.stdout)
        except ValueError:
            raise UnsupportedMediaError("Not a video file we can read") from None
        if not isinstance(data, dict):
            raise UnsupportedMediaError("Not a video file we can read")
        return _parse_probe(data, s)

    async def thumbnail(self, src: Path, dest: Path, duration: float) -> None:
        """A 320 px wide upright JPEG at 10 % of the duration, else the first frame."""
        s = self.settings
        tmp = _temp_path(dest)
        try:
            async with _time_limit(s.thumbnail_timeout_seconds, "Making the thumbnail"):
                run = await _run(self._thumbnail_argv(src, tmp, duration * 0.1))
                if run.returncode != 0 or _size(tmp) == 0:
                    # Seeking past the last video frame (audio longer than video, tiny clips)
                    # exits 0 with nothing written: the first frame is the next best picture.
                    run = await _run(self._thumbnail_argv(src, tmp, None))
            if run.returncode != 0 or _size(tmp) == 0:
                reason = _reason(run.stderr, [src, tmp, dest]) if run.returncode else "no frame"
                raise ProcessingError(f"Could not make a thumbnail ({reason})")
            os.replace(tmp, dest)
        finally:
            _unlink(tmp)

    async def make_mp4(
        self,
        src: Path,
        dest: Path,
        probe: ProbeResult,
        on_progress: Callable[[float], Awaitable[None]],
    ) -> bool:
        """Write a faststart MP4 that browsers play; True when the video stream was copied."""
        s = self.settings
        copy_video, copy_audio = plan_streams(probe)
        progress = _Progress(probe.duration, on_progress)
        tmp = _temp_path(dest)
        try:
            async with _time_limit(s.job_timeout_seconds, "Converting the video"):
                run = await _run(self._mp4_argv(src, tmp, copy_video, copy_audio), progress.line)
                if run.returncode != 0 and copy_video:
                    # Some containers (AVI, raw streams) carry H.264 without usable timestamps;
                    # a transcode still works there.
                    log.info("remux failed, transcoding: %s", _reason(run.stderr, [src, tmp]))
                    copy_video = False
                    run = await _run(
                        self._mp4_argv(src, tmp, copy_video, copy_audio), progress.line
                    )
            if run.returncode != 0:
                raise ProcessingError(
                    f"Could not convert the video ({_reason(run.stderr, [src, tmp, dest])})"
                )
            size = _size(tmp)
            if size == 0:
                raise ProcessingError("Could not convert the video (no output)")
            if size >= s.max_output_bytes:
                # -fs stops writing and still exits 0: the file would be silently cut short.
                raise ProcessingError(
                    f"The converted video would be larger than {human_size(s.max_output_bytes)}"
                )
            os.replace(tmp, dest)
        finally:
            _unlink(tmp)
        await progress.finish()
        return copy_video

    async def make_ladder(
        self,
        src: Path,
        dest: Path,
        probe: ProbeResult,
        rungs: list[Rung],
        storyboard: StoryboardPlan | None,
        on_progress: Callable[[float], Awaitable[None]],
    ) -> list[Measured]:
        """The HLS ladder in folder `dest` (master playlist, a folder a rung), and with a
        `storyboard` plan its sprite and WebVTT beside `dest`, all from one decode. Made in a
        temporary folder and moved into place when whole: a failure or cancellation leaves
        nothing behind."""
        s = self.settings
        copy_top = ladder.copyable_top(
            probe, rungs[0], plan_streams(probe)[0]
        ) and ladder.keyframes_fit(
            await self.keyframe_gap(src, probe.duration), s.hls_segment_seconds
        )
        tmp = _temp_path(dest)
        tmp.mkdir()
        progress = _Progress(probe.duration, on_progress)
        capped = _SizeCap(tmp, s.max_output_bytes)

        async def on_line(line: bytes) -> None:
            capped.check(line)
            await progress.line(line)

        argv = ladder.argv(
            ffmpeg=s.ffmpeg_binary, safe_input=list(SAFE_INPUT_FLAGS), source=_input(src),
            out_dir=str(tmp.absolute()), rungs=rungs, probe=probe,
            segment_seconds=s.hls_segment_seconds, storyboard=storyboard,
            tiles=_output(tmp / TILES) if storyboard is not None else None, copy_top=copy_top,
        )  # fmt: skip
        try:
            async with _time_limit(s.job_timeout_seconds, "Making the HLS renditions"):
                run = await _run(argv, on_line)
                if run.returncode != 0:
                    reason = _reason(run.stderr, [src, tmp, dest])
                    raise ProcessingError(f"Could not make the HLS renditions ({reason})")
                capped.check(b"progress=end")
                try:
                    measured = await asyncio.to_thread(
                        playlists.write_master, tmp, rungs, probe.frame_rate
                    )
                except (OSError, ValueError) as exc:
                    raise ProcessingError(f"Could not make the HLS renditions ({exc})") from None
                if storyboard is not None:
                    await self._sprite(tmp, storyboard, dest.parent)
            for name in os.listdir(tmp):
                if name.startswith(TILES_PREFIX):
                    os.unlink(tmp / name)
            os.rename(tmp, dest)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        await progress.finish()
        return measured

    async def keyframe_gap(self, src: Path, duration: float) -> float | None:
        """The longest stretch between the video's keyframes over its first
        KEYFRAME_WINDOW_SECONDS (from packet flags: nothing is decoded), or None when it
        cannot be read."""
        s = self.settings
        argv = [
            s.ffprobe_binary, "-hide_banner", "-v", "error", *SAFE_INPUT_FLAGS,
            "-select_streams", "V:0", "-read_intervals", f"%+{KEYFRAME_WINDOW_SECONDS}",
            "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0", _input(src),
        ]  # fmt: skip
        async with _time_limit(s.probe_timeout_seconds, "Reading the keyframes"):
            run = await _run(argv, stdout_cap=PROBE_OUTPUT_CAP)
        if run.returncode != 0:
            return None
        times = []
        for line in run.stdout.decode("ascii", "replace").splitlines():
            pts, _, flags = line.partition(",")
            if flags.startswith("K"):
                try:
                    times.append(float(pts))
                except ValueError:
                    return None
        if not times:
            return None
        times.sort()
        times.append(max(times[-1], min(duration, times[0] + KEYFRAME_WINDOW_SECONDS)))
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def storyboard(self, src: Path, folder: Path, plan: StoryboardPlan) -> None:
        """The storyboard alone (no ladder): a pass of its own over the whole video."""
        s = self.settings
        tmp = _temp_path(folder / SPRITE)
        tmp.mkdir()
        argv = [
            s.ffmpeg_binary, "-nostdin", "-hide_banner", "-v", "error", "-nostats",
            *SAFE_INPUT_FLAGS, "-i", _input(src),
            "-map", "0:V:0", "-an", "-sn", "-dn", "-vf", plan.filter(),
            "-frames:v", str(plan.tiles), *ladder.tile_output(_output(tmp / TILES)),
        ]  # fmt: skip
        try:
            async with _time_limit(s.job_timeout_seconds, "Making the storyboard"):
                run = await _run(argv)
                if run.returncode != 0:
                    raise ProcessingError(
                        f"Could not make the storyboard ({_reason(run.stderr, [src, tmp])})"
                    )
                await self._sprite(tmp, plan, folder)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def _sprite(self, tmp: Path, plan: StoryboardPlan, folder: Path) -> None:
        """Tiles (our own JPEGs in `tmp`) into one sprite, and its WebVTT, into `folder`."""
        count = min(plan.tiles, sum(1 for name in os.listdir(tmp) if name.startswith(TILES_PREFIX)))
        if count == 0:
            raise ProcessingError("Could not make the storyboard (no frames)")
        sprite, vtt = tmp / SPRITE, tmp / VTT
        argv = [
            self.settings.ffmpeg_binary, "-nostdin", "-hide_banner", "-v", "error", "-nostats",
            # image2 is refused for user input (SAFE_INPUT_FLAGS); these files are ours.
            "-protocol_whitelist", "file", "-f", "image2", "-i", _input(tmp / TILES),
            "-frames:v", "1", "-vf", plan.sprite_filter(count),
            "-q:v", "4", "-f", "mjpeg", "-y", _output(sprite),
        ]  # fmt: skip
        run = await _run(argv)
        if run.returncode != 0 or _size(sprite) == 0:
            reason = _reason(run.stderr, [tmp]) if run.returncode else "no output"
            raise ProcessingError(f"Could not make the storyboard ({reason})")
        vtt.write_text(plan.vtt(count))
        os.replace(sprite, folder / SPRITE)
        os.replace(vtt, folder / VTT)

    def _thumbnail_argv(self, src: Path, tmp: Path, at: float | None) -> list[str]:
        argv = [self.settings.ffmpeg_binary, "-nostdin", "-hide_banner", "-v", "error", "-nostats"]
        if at is not None:
            argv += ["-ss", f"{at:.3f}"]  # before -i: seek the input, do not decode up to it
        return [
            *argv, *SAFE_INPUT_FLAGS, "-i", _input(src),
            "-map", "0:V:0",  # V, not v: never cover art
            "-an", "-sn", "-dn", "-frames:v", "1",
            "-vf", _THUMBNAIL_FILTER,
            "-q:v", "3", "-fs", str(THUMBNAIL_MAX_BYTES), "-f", "mjpeg", "-y", _output(tmp),
        ]  # fmt: skip

    def _mp4_argv(self, src: Path, tmp: Path, copy_video: bool, copy_audio: bool) -> list[str]:
        argv = [
            self.settings.ffmpeg_binary, "-nostdin", "-hide_banner", "-v", "error",
            "-nostats", "-progress", "pipe:1",
            *SAFE_INPUT_FLAGS, "-i", _input(src),
            "-map", "0:V:0", "-map", "0:a:0?", "-sn", "-dn",
            # The display matrix is stream side data, not metadata: a remux keeps it.
            "-map_metadata", "-1", "-map_chapters", "-1",
        ]  # fmt: skip
        if copy_video:
            argv += ["-c:v", "copy"]
        else:
            # Decoding autorotates, so the pixels come out upright and no rotation is written.
            argv += [*encoders.h264(), "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2"]
        argv += ["-c:a", "copy"] if copy_audio else encoders.aac()
        argv += [
            "-movflags", "+faststart", "-fs", str(self.settings.max_output_bytes),
            "-f", "mp4", "-y", _output(tmp),
        ]  # fmt: skip
        return argv


# --- running a tool -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    returncode: int
    stdout: bytes
    stderr: str  # the last STDERR_TAIL_BYTES


async def _run(
    argv: list[str],
    on_line: Callable[[bytes], Awaitable[None]] | None = None,
    *,
    stdout_cap: int = 0,
) -> _Run:
    """Run a tool in its own session; any exit but its own (cancellation, a time limit from
    the caller, an error) SIGKILLs the whole process group and reaps it before returning."""
    want_stdout = on_line is not None or stdout_cap > 0
    command, death = _spawn_options(argv)
    proc = await _spawn(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if want_stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        **death,
    )
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(_tail(proc.stderr, STDERR_TAIL_BYTES))
    try:
        stdout = b""
        if on_line is not None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                await on_line(line)
        elif stdout_cap:
            assert proc.stdout is not None
            stdout = await _read_capped(proc.stdout, stdout_cap)
        returncode = await proc.wait()
        stderr = await stderr_task
        return _Run(returncode, stdout, stderr.decode("utf-8", "replace"))
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if not stderr_task.done():
            stderr_task.cancel()


async def _spawn(argv: list[str], **options: Any) -> asyncio.subprocess.Process:
    """create_subprocess_exec, except that a cancellation while the process is starting still
    kills its whole group. asyncio's own clean-up there kills only the direct child, then
    waits for pipes its children may still hold (a fake ffmpeg's child kept a test waiting
    60 s that way)."""
    spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(*argv, **options))
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            proc = await spawning
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        raise


async def _tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(64 * 1024):
        buf += chunk
        if len(buf) > keep:
            del buf[:-keep]
    return bytes(buf)


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(256 * 1024):
        buf += chunk
        if len(buf) > cap:
            raise UnsupportedMediaError("Not a video file we can read (too much metadata)")
    return bytes(buf)


@contextlib.asynccontextmanager
async def _time_limit(seconds: float, what: str) -> AsyncIterator[None]:
    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            yield
    except TimeoutError:
        if not limit.expired():
            raise
        raise ProcessingError(f"{what} timed out after {seconds:g} s") from None


class _Progress:
    """Turns `-progress` lines into throttled, never decreasing fractions; 1.0 comes last."""

    def __init__(self, duration: float, callback: Callable[[float], Awaitable[None]]) -> None:
        self.duration = duration
        self.callback = callback
        self.sent = 0.0
        self.sent_at = -math.inf

    async def line(self, raw: bytes) -> None:
        key, _, value = raw.decode("ascii", "replace").strip().partition("=")
        # out_time_ms is in microseconds too (a long-standing ffmpeg quirk).
        if key not in ("out_time_us", "out_time_ms"):
            return
        try:
            seconds = int(value) / 1_000_000
        except ValueError:  # "N/A" before the first packet
            return
        # 1.0 is kept for `finish`: sent once, when the file is in place.
        fraction = min(0.99, max(0.0, seconds / self.duration)) if self.duration > 0 else 0.0
        now = asyncio.get_running_loop().time()
        if fraction > self.sent and now - self.sent_at >= PROGRESS_INTERVAL_SECONDS:
            self.sent, self.sent_at = fraction, now
            await self.callback(fraction)

    async def finish(self) -> None:
        self.sent = 1.0
        await self.callback(1.0)


class _SizeCap:
    """The output size cap for a folder the hls muxer fills (`-fs` caps one file only),
    looked at once per `-progress` block."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit

    def check(self, line: bytes) -> None:
        if not line.startswith(b"progress="):
            return
        if _folder_size(self.folder) >= self.limit:
            raise ProcessingError(
                f"The HLS renditions would be larger than {human_size(self.limit)}"
            )


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


# --- probe parsing ----------------------------------------------------------------------------


def _parse_probe(data: dict[str, Any], s: Settings) -> ProbeResult:
    streams = [st for st in data.get("streams") or [] if isinstance(st, dict)]
    fmt = data.get("format")
    if not isinstance(fmt, dict):
        fmt = {}
    fmt.pop("filename", None)  # our internal path
    raw = {"streams": streams, "format": fmt}

    if len(streams) > s.max_streams:
        raise UnsupportedMediaError(
            f"The file has {len(streams)} streams; at most {s.max_streams} are accepted"
        )
    video = next(
        (
            st
            for st in streams
            if st.get("codec_type") == "video"
            and not (st.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise UnsupportedMediaError("The file has no video stream")
    audio = next((st for st in streams if st.get("codec_type") == "audio"), None)

    duration = _float(fmt.get("duration"))
    if duration is None or duration <= 0:
        duration = _float(video.get("duration"))
    if duration is None or duration <= 0:
        raise UnsupportedMediaError("The video's duration is unknown")
    if duration > s.max_duration_seconds:
        raise UnsupportedMediaError(
            f"The video is {duration_text(duration)} long;"
            f" the limit is {duration_text(s.max_duration_seconds)}"
        )

    coded_w, coded_h = _int(video.get("width")), _int(video.get("height"))
    if not coded_w or not coded_h or not video.get("codec_name"):
        raise UnsupportedMediaError("The video stream cannot be decoded (unknown codec or size)")
    if max(coded_w, coded_h) > s.max_dimension or coded_w * coded_h > s.max_pixels:
        raise UnsupportedMediaError(
            f"The video is {coded_w}x{coded_h}; the limit is {s.max_dimension} px a side "
            f"and {s.max_pixels:,} pixels"
        )
    frame_rate = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    if frame_rate is not None and frame_rate > s.max_frame_rate:
        raise UnsupportedMediaError(
            f"The frame rate is {frame_rate:g} fps; the limit is {s.max_frame_rate:g}"
        )

    rotation = _rotation(video)
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    return ProbeResult(
        raw=raw,
        duration=duration,
        width=width,
        height=height,
        rotation=rotation,
        video_codec=_str(video.get("codec_name")),
        audio_codec=_str(audio.get("codec_name")) if audio else None,
        pix_fmt=_str(video.get("pix_fmt")),
        frame_rate=frame_rate,
        bit_rate=_int(fmt.get("bit_rate")),
        format_name=_str(fmt.get("format_name")),
        coded_width=coded_w,
        coded_height=coded_h,
    )


def _rotation(video: dict[str, Any]) -> int:
    """Clockwise degrees, snapped to a quarter turn."""
    degrees: float | None = None
    for side_data in video.get("side_data_list") or []:
        if isinstance(side_data, dict) and (value := _float(side_data.get("rotation"))) is not None:
            # ffprobe prints the display matrix angle counterclockwise (a phone's portrait
            # clip shows -90); the legacy `rotate` tag and players count clockwise.
            degrees = -value
            break
    if degrees is None:
        degrees = _float((video.get("tags") or {}).get("rotate")) or 0.0
    return round(degrees / 90) % 4 * 90


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _rate(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    num, _, den = value.partition("/")
    n, d = _float(num), _float(den or "1")
    if n is None or not d or n <= 0:
        return None
    return round(n / d, 3)


# --- paths and messages ----------------------------------------------------------------------


def _input(path: Path) -> str:
    # `file:` stops a name with a colon from being read as a protocol; absolute so the
    # worker's working directory never matters.
    return f"file:{path.absolute()}"


_output = _input


def _temp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


_CONTEXT = re.compile(r"\[([^\]\s]+) @ 0x[0-9a-f]+\]\s*")  # "[mov,mp4,... @ 0x55d0...] "
_ANY_PATH = re.compile(r"""(?<![\w.])(?:file:)?/[^\s'"]*""")


def _reason(stderr: str, paths: Iterable[Path]) -> str:
    """The last thing ffmpeg complained about, without our paths or pointers."""
    whitelist = re.search(r"\[([^\]\s]+) @ 0x[0-9a-f]+\] Format not on whitelist", stderr)
    if whitelist:
        return f"the {whitelist.group(1)!r} format is not accepted"
    text = stderr
    for path in paths:
        for form in (_input(path), str(path.absolute()), str(path)):
            text = text.replace(form, "")
    lines = []
    for line in text.splitlines():
        line = _ANY_PATH.sub("", _CONTEXT.sub("", line)).strip(" :,")
        if line:
            lines.append(line)
    return lines[-1][:200] if lines else "unknown error"
