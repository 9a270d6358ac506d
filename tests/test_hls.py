"""The HLS ladder and the storyboard (issue 14): rung plans, playlists parsed with `m3u8`,
every segment probed, playback through ffmpeg over HTTP, publication order, the routes'
rules, cancellation and the output cap."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import m3u8  # type: ignore[import-untyped]
import pytest
from bson import ObjectId
from redis.asyncio import Redis

from clipo_gql.errors import ProcessingError
from clipo_gql.hls import ladder, storyboard
from clipo_gql.hls.playlists import with_token
from clipo_gql.media import Media, ProbeResult
from clipo_gql.models import Video
from clipo_gql.settings import Settings
from tests.clips import Clips, make_clip, rotate_clip
from tests.conftest import Server, run_server, video_files
from tests.hardening.test_access import ALICE, auth_settings, bearer, done_video
from tests.test_api import upload_id, watch

pytest_plugins = ["tests.clips"]
pytestmark = pytest.mark.timeout(120)

FFPROBE = "ffprobe"
FIELDS = (
    "id status progress streamUrl thumbnailUrl hlsUrl storyboardUrl"
    " renditions { width height bitRate }"
)
VIDEO = f"query($id: ID!) {{ video(id: $id) {{ {FIELDS} }} }}"
WATCH = f"subscription($id: ID!) {{ videoStatus(id: $id) {{ {FIELDS} }} }}"


def probe_of(
    width: int, height: int, *, sar: str = "1:1", audio: bool = True, duration: float = 10.0
) -> ProbeResult:
    stream = {"codec_type": "video", "sample_aspect_ratio": sar}
    return ProbeResult(
        raw={"streams": [stream], "format": {}}, duration=duration,
        width=width, height=height, rotation=0, video_codec="h264",
        audio_codec="aac" if audio else None, pix_fmt="yuv420p", frame_rate=30.0,
        bit_rate=None, format_name="mov", coded_width=width, coded_height=height,
    )  # fmt: skip


HEIGHTS = [1080, 720, 480, 360]


@pytest.mark.parametrize(
    ("probe", "sizes"),
    [
        (probe_of(1920, 1080), [(1920, 1080), (1280, 720), (854, 480), (640, 360)]),
        (probe_of(1280, 720), [(1280, 720), (854, 480), (640, 360)]),
        # Portrait: the heights are the picture's, widths follow its aspect.
        (probe_of(1080, 1920), [(608, 1080), (404, 720), (270, 480), (202, 360)]),
        # Smaller than every rung: one rendition at its own (even) size.
        (probe_of(321, 241), [(320, 240)]),
        (probe_of(96, 64), [(96, 64)]),
        # Anamorphic PAL 16:9: square pixels out.
        (probe_of(720, 576, sar="64:45"), [(854, 480), (640, 360)]),
    ],
    ids=["1080p", "720p", "portrait", "odd", "tiny", "anamorphic"],
)
def test_rungs(probe: ProbeResult, sizes: list[tuple[int, int]]):
    rungs = ladder.plan_rungs(probe, HEIGHTS)
    assert [(r.width, r.height) for r in rungs] == sizes
    assert all(r.width % 2 == 0 and r.height % 2 == 0 for r in rungs)


def test_peak_bitrates_follow_apples_table():
    assert ladder.maxrate_kbps(1920, 1080, 30) == 6000
    assert ladder.maxrate_kbps(1280, 720, 30) == 3000
    assert ladder.maxrate_kbps(640, 360, 25) == 365
    assert ladder.maxrate_kbps(1280, 720, 60) == 4500
    assert 1100 < ladder.maxrate_kbps(854, 480, 30) < 2000


@pytest.mark.parametrize("duration", [0.4, 7.0, 20.0, 1000.0, 4 * 3600.0])
def test_storyboard_cues_cover_the_video_inside_the_sprite(duration: float):
    plan = storyboard.plan(probe_of(1280, 720, duration=duration), 16 / 9)
    assert 1 <= plan.tiles <= storyboard.MAX_TILES
    assert plan.interval >= storyboard.MIN_INTERVAL_SECONDS
    assert (plan.tile_width, plan.tile_height) == (160, 90)
    columns, rows = plan.grid(plan.tiles)
    cues = parse_vtt(plan.vtt(plan.tiles))
    assert len(cues) == plan.tiles
    assert_cues_cover(cues, duration, columns * plan.tile_width, rows * plan.tile_height)


def parse_vtt(text: str) -> list[tuple[float, float, str, tuple[int, ...]]]:
    assert text.startswith("WEBVTT\n")
    cues = []
    for block in text.split("\n\n")[1:]:
        if not block.strip():
            continue
        timing, target = block.strip().splitlines()
        start, end = (_seconds(t) for t in timing.split(" --> "))
        url, _, xywh = target.partition("#xywh=")
        cues.append((start, end, url, tuple(int(v) for v in xywh.split(","))))
    return cues


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def assert_cues_cover(cues: list[Any], duration: float, width: int, height: int) -> None:
    assert cues[0][0] == 0
    assert cues[-1][1] == pytest.approx(duration, abs=0.001)
    for (_, end, _, _), (start, _, _, _) in zip(cues, cues[1:], strict=False):
        assert start == end  # no gaps
    for _, _, _, (x, y, w, h) in cues:
        assert 0 <= x <= x + w <= width
        assert 0 <= y <= y + h <= height


def test_tokens_reach_every_uri():
    media = '#EXTM3U\n#EXT-X-MAP:URI="init_0.mp4"\n#EXTINF:6.0,\nseg00000.m4s\n#EXT-X-ENDLIST\n'
    assert with_token(media, "T") == (
        '#EXTM3U\n#EXT-X-MAP:URI="init_0.mp4?token=T"\n#EXTINF:6.0,\nseg00000.m4s?token=T\n'
        "#EXT-X-ENDLIST\n"
    )
    vtt = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90\n"
    assert "storyboard.jpg?token=T#xywh=0,0,160,90" in with_token(vtt, "T")


# --- the ladder made by ffmpeg ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(clips: Clips, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ladder-sources")
    portrait_src = make_clip(folder / "landscape.mp4", seconds=3, size="640x360", fps=30)
    return {
        "720p": make_clip(folder / "720p.mp4", seconds=5, size="1280x720", fps=30),
        "1080p": make_clip(folder / "1080p.mp4", seconds=2.5, size="1920x1080", fps=24),
        "portrait": rotate_clip(portrait_src, folder / "portrait.mp4", 90),
        "odd": clips.odd_size,
        "tiny": clips.short,
        "no-audio": clips.h264_noaudio,
        # Browser-safe H.264 at a rung's size, a keyframe a second, under the rung's peak:
        # the top rung is this video as it is.
        "copyable": copyable_clip(folder / "copyable.mp4"),
    }


def copyable_clip(path: Path, seconds: float = 4) -> Path:
    return make_clip(path, seconds=seconds, size="640x360", fps=30,
                     extra=["-g", "30", "-maxrate", "250k", "-bufsize", "500k"])  # fmt: skip


def ladder_settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(media_dir=tmp_path / "media", hls_segment_seconds=2, **extra)


async def make(settings: Settings, src: Path, folder: Path) -> tuple[ProbeResult, list[Any]]:
    media = Media(settings)
    probe = await media.probe(src)
    rungs = ladder.plan_rungs(probe, settings.hls_heights)
    plan = storyboard.plan(probe, ladder.display_aspect(probe))
    folder.mkdir(parents=True)  # noqa: ASYNC240 - a test's folder
    progress: list[float] = []

    async def on_progress(ratio: float) -> None:
        progress.append(ratio)

    measured = await media.make_ladder(src, folder / "hls", probe, rungs, plan, on_progress)
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    return probe, measured


def ffprobe_json(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-print_format", "json", *args],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize(
    "name", ["720p", "1080p", "portrait", "odd", "tiny", "no-audio", "copyable"]
)
async def test_the_ladder_is_aligned_and_every_segment_plays(
    name: str, sources: dict[str, Path], tmp_path: Path
):
    settings = ladder_settings(tmp_path)
    folder = tmp_path / "video"
    probe, measured = await make(settings, sources[name], folder)
    master = m3u8.load(str(folder / "hls" / "master.m3u8"))
    assert master.is_variant
    rungs = ladder.plan_rungs(probe, HEIGHTS)
    assert [p.stream_info.resolution for p in master.playlists] == [
        (r.width, r.height) for r in rungs
    ]
    has_audio = probe.audio_codec is not None
    durations = None
    for playlist, rung in zip(master.playlists, rungs, strict=True):
        info = playlist.stream_info
        assert info.bandwidth >= info.average_bandwidth > 0
        copied = name == "copyable" and rung == rungs[0]
        # x264 High, or a copied rung's own profile (make_clip's is Constrained Baseline).
        assert info.codecs.startswith("avc1.42c0" if copied else "avc1.64")
        assert ("mp4a.40.2" in info.codecs) is has_audio
        assert info.frame_rate == pytest.approx(probe.frame_rate, abs=0.01)
        media = m3u8.load(str(folder / "hls" / playlist.uri))
        assert media.playlist_type == "vod"
        assert media.is_endlist
        assert media.segment_map
        assert media.segment_map[0].uri
        assert media.target_duration >= 1
        assert all(round(s.duration) <= media.target_duration for s in media.segments)
        these = [round(s.duration, 3) for s in media.segments]
        durations = durations or these
        assert these == durations, "segments are not aligned across rungs"
        assert sum(these) == pytest.approx(probe.duration, abs=0.25)
        rung_dir = folder / "hls" / Path(playlist.uri).parent
        init = (rung_dir / media.segment_map[0].uri).read_bytes()
        for n, segment in enumerate(media.segments):
            joined = tmp_path / f"{rung.name}-{n}.mp4"
            joined.write_bytes(init + (rung_dir / segment.uri).read_bytes())
            found = ffprobe_json("-show_streams", "-show_frames", "-read_intervals", "%+#1",
                                 "-select_streams", "v", str(joined))  # fmt: skip
            (video,) = found["streams"]
            assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
            assert (video["width"], video["height"]) == (rung.width, rung.height)
            assert found["frames"][0]["key_frame"] == 1, "a segment must start with a keyframe"
            streams = ffprobe_json("-show_streams", str(joined))["streams"]
            assert any(s["codec_type"] == "audio" for s in streams) is has_audio
    sprite = ffprobe_json("-show_streams", str(folder / "storyboard.jpg"))["streams"][0]
    cues = parse_vtt((folder / "storyboard.vtt").read_text())
    assert {url for *_, url, _ in cues} == {"storyboard.jpg"}
    assert_cues_cover(cues, probe.duration, sprite["width"], sprite["height"])
    assert [m.rung for m in measured] == rungs
    assert sorted(p.name for p in folder.iterdir()) == ["hls", "storyboard.jpg", "storyboard.vtt"]


def ffmpeg_processes_on(path: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline:
                found.append(int(pid))
    return found


async def test_keyframes_every_two_seconds_on_every_segment_boundary(tmp_path: Path):
    # 6 s segments (the default): a keyframe at 0, 2, 4, 6, ... s in every rung, so a player
    # that seeks or switches mid-segment waits at most 2 s of decoding for a picture.
    settings = Settings(media_dir=tmp_path / "media", hls_renditions="360,180")
    src = make_clip(tmp_path / "13s.mp4", seconds=13, size="640x360", fps=30)
    folder = tmp_path / "video"
    await make(settings, src, folder)
    master = m3u8.load(str(folder / "hls" / "master.m3u8"))
    times = []
    for playlist in master.playlists:
        media = m3u8.load(str(folder / "hls" / playlist.uri))
        assert [round(s.duration, 3) for s in media.segments] == [6.0, 6.0, 1.0]
        rung_dir = folder / "hls" / Path(playlist.uri).parent
        joined = tmp_path / "joined.mp4"
        with joined.open("wb") as out:
            for name in [media.segment_map[0].uri, *(s.uri for s in media.segments)]:
                out.write((rung_dir / name).read_bytes())
        frames = ffprobe_json("-skip_frame", "nokey", "-select_streams", "v",
                              "-show_entries", "frame=pts_time", str(joined))["frames"]  # fmt: skip
        start = float(frames[0]["pts_time"])  # the fMP4 may start past 0 (audio priming)
        times.append([round(float(f["pts_time"]) - start, 2) for f in frames])
    assert times[0] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    assert times[1] == times[0], "keyframes differ across rungs"


def video_packets(path: Path) -> list[tuple[str, str]]:
    found = ffprobe_json("-select_streams", "v", "-show_entries", "packet=size,flags", str(path))
    return [(p["size"], p["flags"][0]) for p in found["packets"]]


def joined_rung(folder: Path, uri: str, dest: Path) -> Path:
    media = m3u8.load(str(folder / uri))
    rung_dir = folder / Path(uri).parent
    with dest.open("wb") as out:
        for name in [media.segment_map[0].uri, *(s.uri for s in media.segments)]:
            out.write((rung_dir / name).read_bytes())
    return dest


async def test_a_browser_safe_source_is_copied_as_the_top_rung(tmp_path: Path):
    src = copyable_clip(tmp_path / "src.mp4", seconds=7)
    settings = Settings(media_dir=tmp_path / "media", hls_segment_seconds=2,
                        hls_renditions="360,180")  # fmt: skip
    folder = tmp_path / "video"
    await make(settings, src, folder)
    hls = folder / "hls"
    top, low = (p.uri for p in m3u8.load(str(hls / "master.m3u8")).playlists)
    # The same compressed pictures as the source: copied, not encoded again.
    assert video_packets(joined_rung(hls, top, tmp_path / "top.mp4")) == video_packets(src)
    keyframes = []
    for uri in (top, low):
        frames = ffprobe_json(
            "-skip_frame",
            "nokey",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time",
            str(joined_rung(hls, uri, tmp_path / "j.mp4")),
        )
        keyframes.append([round(float(f["pts_time"]), 2) for f in frames["frames"]])
    assert len(keyframes[0]) == 7
    assert keyframes[1] == keyframes[0], "the encoded rung must take the copy's keyframes"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["-g", "300"], "keyframes 10 s apart: segments would be too long"),
        (["-g", "30", "-b:v", "2M"], "more bits than the rung's peak"),
    ],
)
async def test_a_source_unfit_for_copying_is_encoded(tmp_path: Path, extra: list[str], why: str):
    src = make_clip(tmp_path / "src.mp4", seconds=4, size="640x360", fps=30, extra=extra)
    settings = Settings(media_dir=tmp_path / "media", hls_segment_seconds=2,
                        hls_renditions="360")  # fmt: skip
    folder = tmp_path / "video"
    await make(settings, src, folder)
    hls = folder / "hls"
    (top,) = (p.uri for p in m3u8.load(str(hls / "master.m3u8")).playlists)
    assert video_packets(joined_rung(hls, top, tmp_path / "top.mp4")) != video_packets(src), why


async def test_cancelling_mid_ladder_leaves_no_ffmpeg_and_no_files(tmp_path: Path):
    src = make_clip(tmp_path / "long.mp4", seconds=30, size="1280x720", fps=30)
    settings = ladder_settings(tmp_path)
    folder = tmp_path / "video"
    media = Media(settings)
    probe = await media.probe(src)
    rungs = ladder.plan_rungs(probe, HEIGHTS)
    plan = storyboard.plan(probe, ladder.display_aspect(probe))
    folder.mkdir()
    started = asyncio.Event()

    async def on_progress(ratio: float) -> None:
        started.set()

    job = asyncio.create_task(
        media.make_ladder(src, folder / "hls", probe, rungs, plan, on_progress)
    )
    await asyncio.wait_for(started.wait(), 60)
    assert ffmpeg_processes_on(folder), "the ladder's ffmpeg should be running"
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert ffmpeg_processes_on(folder) == []
    assert list(folder.iterdir()) == []


async def test_the_output_cap_holds_for_the_ladder(sources: dict[str, Path], tmp_path: Path):
    settings = ladder_settings(tmp_path, max_output_bytes=100_000)
    folder = tmp_path / "video"
    with pytest.raises(ProcessingError, match="HLS renditions would be larger than"):
        await make(settings, sources["720p"], folder)
    assert list(folder.iterdir()) == []


# --- through the service ----------------------------------------------------------------------


@pytest.fixture
async def hls_server(settings: Settings, redis: Redis) -> Any:
    async for running in run_server(settings.model_copy(update={"hls_segment_seconds": 2})):
        yield running


@pytest.fixture(scope="module")
def clip_360p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("360p") / "360p.mp4", seconds=5, size="640x360")


async def watch_all(server: Server, video_id: str) -> list[dict[str, Any]]:
    from tests.wsclient import subscribe

    states = []
    async for payload in subscribe(server.ws_url, WATCH, {"id": video_id}):
        assert not payload.get("errors"), payload
        states.append(payload["data"]["videoStatus"])
    return states


async def test_the_mp4_is_published_before_the_ladder(hls_server: Server, clip_360p: Path):
    video_id = await upload_id(hls_server, clip_360p)
    states = await asyncio.wait_for(watch_all(hls_server, video_id), 60)
    final = states[-1]
    assert final["status"] == "DONE"
    progress = [s["progress"] for s in states if s["progress"] is not None]
    assert progress == sorted(progress), "progress went down"
    playable = [s for s in states if s["status"] == "PROCESSING" and s["streamUrl"]]
    assert playable, "the MP4 must be published while the ladder is made"
    assert all(s["hlsUrl"] is None and s["renditions"] == [] for s in playable)
    assert final["hlsUrl"].endswith(f"/hls/{video_id}/master.m3u8")
    assert final["storyboardUrl"].endswith(f"/storyboard/{video_id}/storyboard.vtt")
    (rendition,) = final["renditions"]
    assert (rendition["width"], rendition["height"]) == (640, 360)
    assert rendition["bitRate"] > 0

    http = hls_server.http
    master = await http.get(final["hlsUrl"])
    assert master.status_code == 200
    assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert "AVERAGE-BANDWIDTH=" in master.text
    variant = m3u8.loads(master.text).playlists[0].uri
    playlist = await http.get(f"/hls/{video_id}/{variant}")
    segment = m3u8.loads(playlist.text).segments[0].uri
    segment_url = f"/hls/{video_id}/{Path(variant).parent}/{segment}"
    ranged = await http.get(segment_url, headers={"Range": "bytes=0-99"})
    assert (ranged.status_code, len(ranged.content)) == (206, 100)
    etag = ranged.headers["etag"]
    assert (await http.get(segment_url, headers={"If-None-Match": etag})).status_code == 304
    for bad in ("..%2Frecord.json", "360p%2F..%2F..%2Foriginal", "360p/index.m3u8.bak",
                "x/seg00000.m4s", "360p/seg0.m4s", "%2E%2E/original"):  # fmt: skip
        assert (await http.get(f"/hls/{video_id}/{bad}")).status_code == 404, bad
    vtt = await http.get(final["storyboardUrl"])
    assert vtt.headers["content-type"].startswith("text/vtt")
    sprite = await http.get(f"/storyboard/{video_id}/storyboard.jpg")
    assert (sprite.status_code, sprite.headers["content-type"]) == (200, "image/jpeg")

    # Full-length playback, as a player reads it: the master over HTTP.
    played = await plays_for(final["hlsUrl"])
    assert played == pytest.approx(5.0, abs=0.3)

    # Segments are counted by their route, never their path; the ladder is a job phase.
    metrics = (await http.get("/metrics")).text
    assert 'route="/hls/{id}/{path:path}"' in metrics
    assert video_id not in metrics
    assert 'clipo_job_phase_seconds_count{phase="ladder"}' in metrics


async def plays_for(url: str) -> float:
    """Seconds of video ffmpeg decodes reading `url` (no headers, like a player)."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-v", "error", "-i", url, "-map", "0:v:0", "-f", "null", "-",
        "-progress", "pipe:1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    times = re.findall(rb"out_time_us=(\d+)", out)
    return int(times[-1]) / 1e6


async def test_routes_answer_409_until_each_output_is_published(
    hls_server: Server, clip_360p: Path
):
    video_id = await upload_id(hls_server, clip_360p)
    states = await asyncio.wait_for(watch(hls_server, video_id), 60)
    assert states[-1]["status"] == "DONE"
    # Back to the moment the MP4 was published and the ladder not yet.
    await Video.get_motor_collection().update_one(
        {"_id": ObjectId(video_id)},
        {"$set": {"status": "PROCESSING", "published": ["mp4"], "renditions": []}},
    )
    http = hls_server.http
    assert (await http.get(f"/stream/{video_id}")).status_code == 200
    assert (await http.get(f"/thumbnails/{video_id}.jpg")).status_code == 200
    for path in ("hls/{}/master.m3u8", "storyboard/{}/storyboard.vtt"):
        response = await http.get("/" + path.format(video_id))
        assert response.status_code == 409
        assert "not ready yet" in response.json()["error"]
    video = (await hls_server.gql(VIDEO, id=video_id))["data"]["video"]
    assert video["streamUrl"]
    assert (video["hlsUrl"], video["storyboardUrl"]) == (None, None)


async def test_without_hls_a_storyboard_alone(settings: Settings, redis: Redis, clip_360p: Path):
    async for server in run_server(settings.model_copy(update={"hls_renditions": ""})):
        video_id = await upload_id(server, clip_360p)
        states = await asyncio.wait_for(watch_all(server, video_id), 60)
        final = states[-1]
        assert final["status"] == "DONE"
        assert (final["hlsUrl"], final["renditions"]) == (None, [])
        assert final["storyboardUrl"]
        response = await server.http.get(f"/hls/{video_id}/master.m3u8")
        assert response.status_code == 404
        assert "no HLS" in response.json()["error"]
        vtt = await server.http.get(final["storyboardUrl"])
        cues = parse_vtt(vtt.text)
        sprite = ffprobe_json("-show_streams", str(server.settings.media_dir / "videos" /
                              video_id / "storyboard.jpg"))["streams"][0]  # fmt: skip
        assert_cues_cover(cues, 5.0, sprite["width"], sprite["height"])
        assert not (server.settings.media_dir / "videos" / video_id / "hls").exists()


async def test_with_auth_the_tokens_reach_every_playlist_and_segment(
    settings: Settings, redis: Redis, clip_360p: Path
):
    locked = auth_settings(settings, hls_segment_seconds=2)
    async for server in run_server(locked):
        video = await done_video(server, clip_360p, bearer(server, ALICE))
        found = await server.http.post(
            "/graphql", json={"query": VIDEO, "variables": {"id": video["id"]}},
            headers=bearer(server, ALICE),
        )  # fmt: skip
        final = found.json()["data"]["video"]
        assert "?token=" in final["hlsUrl"]
        assert "?token=" in final["storyboardUrl"]
        # A player sends no headers: every URI in the playlists carries the token.
        assert await plays_for(final["hlsUrl"]) == pytest.approx(5.0, abs=0.3)
        master = (await server.http.get(final["hlsUrl"])).text
        variant = m3u8.loads(master).playlists[0].uri
        assert "?token=" in variant
        media = (await server.http.get(f"/hls/{video['id']}/{variant}")).text
        assert all("?token=" in s.uri for s in m3u8.loads(media).segments)
        assert "?token=" in m3u8.loads(media).segment_map[0].uri
        vtt = (await server.http.get(final["storyboardUrl"])).text
        assert all("?token=" in url for *_, url, _ in parse_vtt(vtt))
        bare = f"/hls/{video['id']}/{variant.split('?')[0]}"
        assert (await server.http.get(bare)).status_code == 401
        stream_token = final["streamUrl"].split("?token=")[1]
        wrong_kind = await server.http.get(f"{bare}?token={stream_token}")
        assert wrong_kind.status_code == 403


async def test_media_routes_answer_cors_for_allowed_origins(
    settings: Settings, redis: Redis, clip_360p: Path
):
    origin = "https://player.example"
    allowed = settings.model_copy(update={"allowed_origins": origin, "hls_segment_seconds": 2})
    async for server in run_server(allowed):
        video_id = await upload_id(server, clip_360p)
        states = await asyncio.wait_for(watch(server, video_id), 60)
        assert states[-1]["status"] == "DONE"
        response = await server.http.get(f"/hls/{video_id}/master.m3u8", headers={"Origin": origin})
        assert response.headers["access-control-allow-origin"] == origin
        other = await server.http.get(
            f"/hls/{video_id}/master.m3u8", headers={"Origin": "https://elsewhere.example"}
        )
        assert "access-control-allow-origin" not in other.headers


async def test_a_hostile_file_is_refused_before_any_encoder_runs(
    settings: Settings, redis: Redis, clips: Clips, tmp_path: Path
):
    calls = tmp_path / "ffmpeg-calls"
    recorder = tmp_path / "ffmpeg"
    recorder.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec ffmpeg "$@"\n')
    recorder.chmod(0o755)
    async for server in run_server(settings.model_copy(update={"ffmpeg_binary": str(recorder)})):
        body = (await server.upload(clips.hls_as_mp4, filename="clip.mp4")).json()
        assert body["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA", body
        assert not calls.exists(), calls.read_text()
        assert video_files(server.settings) == []
