"""One video through the pipeline: probe, thumbnail, browser-playable MP4, metadata JSON,
then (published as a step of its own) the HLS ladder and the storyboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bson import ObjectId
from pymongo.errors import ConnectionFailure

from clipo_gql.auth.quotas import quota_left
from clipo_gql.errors import ClipoError, ProcessingError
from clipo_gql.fetch import download
from clipo_gql.hls import ladder, storyboard
from clipo_gql.media import Media, ProbeResult, plan_streams
from clipo_gql.models import Output, Rendition, Video, VideoSource, VideoStatus
from clipo_gql.ops.metrics import phase
from clipo_gql.settings import Settings
from clipo_gql.storage import (
    HLS,
    LATER_OUTPUTS,
    METADATA,
    ORIGINAL,
    PROCESSED,
    THUMBNAIL,
    Storage,
)
from clipo_gql.videos import VideoService, stored_progress

log = logging.getLogger(__name__)
A = TypeVar("A")
B = TypeVar("B")

# Share of the progress bar each step owns: the MP4 step is where the time goes. A URL's
# download takes the first DOWNLOADED of the bar and the steps share the rest.
# (media.py and fetch.py report progress at most four times a second: each report costs a
# MongoDB write and a publish.)
DOWNLOADED = 0.4
PROBED, ENCODED = 0.03, 0.98
# Where the MP4 step ends when a ladder or storyboard follows: a remux takes about a second,
# a transcode about a third of a four-rung ladder.
REMUXED, TRANSCODED = 0.08, 0.3


def video_fields(probe: ProbeResult) -> dict[str, Any]:
    return {
        "duration": probe.duration,
        "width": probe.width,
        "height": probe.height,
        "video_codec": probe.video_codec,
        "audio_codec": probe.audio_codec,
        "frame_rate": probe.frame_rate,
        "bit_rate": probe.bit_rate,
        "format_name": probe.format_name,
    }


def metadata_document(video: Video, probe: ProbeResult) -> dict[str, Any]:
    return {
        "id": str(video.id),
        "filename": video.filename,
        "source": video.source.value,
        "sourceUrl": video.source_url,
        "createdAt": video.created_at.isoformat(),
        "sizeBytes": video.size_bytes,
        "duration": probe.duration,
        "durationText": probe.duration_text,
        "width": probe.width,
        "height": probe.height,
        "rotation": probe.rotation,
        "videoCodec": probe.video_codec,
        "audioCodec": probe.audio_codec,
        "pixelFormat": probe.pix_fmt,
        "frameRate": probe.frame_rate,
        "bitRate": probe.bit_rate,
        "formatName": probe.format_name,
        "ffprobe": probe.raw,
    }


class Pipeline:
    def __init__(
        self, settings: Settings, videos: VideoService, media: Media, storage: Storage
    ) -> None:
        self.settings = settings
        self.videos = videos
        self.media = media
        self.storage = storage

    async def run(self, video_id: ObjectId) -> VideoStatus | None:
        """Process a video; safe to run again for the same id (arq delivers at least once).

        The status it ended in (DONE, FAILED), or None when this run decided nothing (the
        video was deleted, or an earlier delivery had finished it)."""
        video = await self.videos.start_processing(video_id)
        if video is None:
            return None  # deleted, or already DONE/FAILED by an earlier delivery
        try:
            # An earlier attempt may have died mid-write: start from the original alone.
            await self.storage.remove_outputs(video_id)
            async with asyncio.timeout(self.settings.job_timeout_seconds):
                return await self._process(video)
        except TimeoutError:
            return await self._fail(
                video_id,
                f"Processing took longer than the {self.settings.job_timeout_seconds} s limit",
            )
        except ClipoError as exc:
            return await self._fail(video_id, exc.message)
        except asyncio.CancelledError:
            # Worker shutting down (or the video was deleted): arq runs the job again.
            await self._interrupted(video_id)
            raise
        except ConnectionFailure:
            # MongoDB is unreachable: not the video's fault, and nothing could store a failure
            # anyway. The job waits for the database and runs this again (tasks.py).
            await self.storage.remove_outputs(video_id)
            raise
        except OSError as exc:
            # The disk or the object store refused: the video is not at fault, a retry may do.
            log.warning("processing video %s could not store its files: %s", video_id, exc)
            return await self._fail(
                video_id, "Processing failed: its files could not be stored; retry the video"
            )
        except Exception:
            log.exception("processing video %s failed unexpectedly", video_id)
            return await self._fail(video_id, "Processing failed because of an internal error")
        finally:
            with contextlib.suppress(OSError):
                await self.storage.drop_scratch(video_id)

    async def _interrupted(self, video_id: ObjectId) -> None:
        """Show the video as queued again, not stuck PROCESSING, and tidy what it left.

        The cancellation can land after `finish()` stored DONE (while it publishes): then the
        outputs are the finished video's and must stay, so files are removed only once the
        video is known to be PENDING again (or deleted). Best effort and bounded: an error here
        must not replace the CancelledError, or arq would count the job as failed instead of
        running it again; the next run removes partial outputs first anyway.
        """
        try:
            async with asyncio.timeout(5):
                if await self.videos.interrupted(video_id) is not None:
                    await self.storage.remove_outputs(video_id)
                elif await Video.get(video_id) is None:
                    await self.storage.remove_video(video_id)  # deleted while we worked
        except Exception:
            log.warning("could not mark interrupted video %s as PENDING", video_id, exc_info=True)

    async def _fail(self, video_id: ObjectId, reason: str) -> VideoStatus | None:
        log.info("video %s FAILED: %s", video_id, reason)
        with contextlib.suppress(OSError):  # the store down: the failure is still stored
            await self.storage.remove_outputs(video_id)
        return VideoStatus.FAILED if await self.videos.fail(video_id, reason) else None

    async def _process(self, video: Video) -> VideoStatus | None:
        assert video.id is not None
        video_id = video.id
        source = self.storage.original(video_id)
        bar = _ProgressBar(self.videos, video_id)
        have = await self.storage.fetch_original(video_id)
        if video.source is VideoSource.URL and not have:
            with phase("download"):
                if not await self._download(video, source, bar):
                    return None  # deleted meanwhile
                # In the store too: a retry, another worker or `reindex` needs no new download.
                await self.storage.publish(video_id, [ORIGINAL])
            bar.start = DOWNLOADED
        elif not have:
            raise ProcessingError("The uploaded file is missing; upload it again")

        with phase("probe"):
            probe = await self.media.probe(source)
        # The stored state from here on: it has the downloaded file's name and size too. The
        # probe's share of the bar goes with it: one write, not two (each costs a scan of the
        # collection on FerretDB, bench row 7).
        probed = {**video_fields(probe), "progress": bar.value(PROBED)}
        recorded = await self.videos.record(video_id, probed)
        if recorded is None:
            return None  # deleted meanwhile

        rungs = ladder.plan_rungs(probe, self.settings.hls_heights)
        later = bool(self.settings.hls_heights) or self.settings.storyboard
        copy_video, _ = plan_streams(probe)
        # The MP4's share of the bar: most of it alone, a little of it before a ladder.
        mp4_end = ENCODED if not later else (REMUXED if copy_video else TRANSCODED)

        async def on_mp4(ratio: float) -> None:
            if ratio >= 1.0 and not later:
                return  # DONE follows within milliseconds: one write fewer per video
            await bar.at(PROBED + (mp4_end - PROBED) * ratio)

        # The thumbnail and the MP4 only need the probe: made side by side, a remux's video is
        # ready a thumbnail sooner (about 80 ms of 450 for a 30 s 720p clip, bench row 1).
        _, remuxed = await _together(
            _timed("thumbnail", self.media.thumbnail(
                source, self.storage.thumbnail(video_id), probe.duration
            )),
            _timed("mp4", self.media.make_mp4(
                source, self.storage.processed(video_id), probe, on_mp4
            )),
        )  # fmt: skip
        await self.storage.write_json(
            self.storage.metadata(video_id), metadata_document(recorded, probe)
        )
        await self.storage.publish(video_id, [THUMBNAIL, PROCESSED, METADATA])
        published = [Output.MP4]
        fields: dict[str, Any] = {"remuxed": remuxed}
        if later:
            # Playable first: the MP4's URLs answer while the ladder is made.
            if await self.videos.publish(video_id, published, fields) is None:
                await self.storage.remove_video(video_id)
                return None
            await self._later_outputs(source, video_id, probe, rungs, bar, mp4_end, fields)
            published += fields.pop("published")
        done = await self.videos.finish(
            video_id, {**fields, "published": [out.value for out in published]}
        )
        if done is None:
            # Deleted while we worked: the delete may have run before our files appeared.
            await self.storage.remove_video(video_id)
            return None
        log.info("video %s DONE (%s)", video_id, "remuxed" if remuxed else "transcoded")
        return VideoStatus.DONE

    async def _later_outputs(
        self,
        source: Path,
        video_id: ObjectId,
        probe: ProbeResult,
        rungs: list[ladder.Rung],
        bar: _ProgressBar,
        start: float,
        fields: dict[str, Any],
    ) -> None:
        """The ladder (with the storyboard in its decode) or the storyboard alone; adds what
        it made to `fields` (`published`, `renditions`)."""
        plan = (
            storyboard.plan(probe, ladder.display_aspect(probe))
            if self.settings.storyboard else None
        )  # fmt: skip

        async def on_ladder(ratio: float) -> None:
            await bar.at(start + (ENCODED - start) * ratio)

        made: list[Output] = []
        if self.settings.hls_heights:
            with phase("ladder"):
                measured = await self.media.make_ladder(
                    source, self.storage.hls(video_id), probe, rungs, plan, on_ladder
                )
                # The storyboard (made in the ladder's decode) first: the ladder's master
                # playlist is what players ask for first.
                await self.storage.publish(
                    video_id, [*(LATER_OUTPUTS if plan is not None else ()), HLS]
                )
            made.append(Output.HLS)
            fields["renditions"] = [
                Rendition(
                    width=m.rung.width, height=m.rung.height, bit_rate=m.average_bps
                ).model_dump()
                for m in measured
            ]
        elif plan is not None:
            with phase("storyboard"):
                await self.media.storyboard(source, self.storage.video_dir(video_id), plan)
                await self.storage.publish(video_id, LATER_OUTPUTS)
        if plan is not None:
            made.append(Output.STORYBOARD)
        fields["published"] = made

    async def _download(self, video: Video, dest: Path, bar: _ProgressBar) -> bool:
        assert video.id is not None
        assert video.source_url is not None

        async def on_bytes(received: int, total: int | None) -> None:
            if total:
                await bar.at(DOWNLOADED * received / total)

        dest.parent.mkdir(parents=True, exist_ok=True)
        left = await quota_left(self.settings, video)
        got = await download(video.source_url, dest, self.settings, on_bytes, quota_left=left)
        fields = {"filename": got.filename, "size_bytes": got.size}
        return await self.videos.record(video.id, fields) is not None


async def _timed(name: str, step: Coroutine[Any, Any, A]) -> A:
    with phase(name):
        return await step


async def _together(first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Both results; when one fails, the other is cancelled (its ffmpeg killed) and the
    failure is raised as itself, not in an ExceptionGroup, for `run` to report."""
    try:
        async with asyncio.TaskGroup() as group:
            a = group.create_task(first)
            b = group.create_task(second)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0]  # noqa: B904 - the first failure is the story
    return a.result(), b.result()


class _ProgressBar:
    """Maps each step's share of the work onto the bar: after the download, when there was one."""

    def __init__(self, videos: VideoService, video_id: ObjectId) -> None:
        self.videos = videos
        self.video_id = video_id
        self.start = 0.0
        self.warned = False

    def value(self, share: float) -> float:
        """The stored progress of `share` of this step (set_progress's rounding and cap)."""
        return stored_progress(self.start + (1 - self.start) * share)

    async def at(self, share: float) -> None:
        try:
            await self.videos.set_progress(self.video_id, self.value(share))
        except ConnectionFailure as exc:
            # Progress is for the eyes: a database outage must not stop a long transcode. The
            # states that matter (recorded probe, DONE) are written later and do not skip this.
            if not self.warned:
                log.warning("progress of video %s not stored: %s", self.video_id, exc)
                self.warned = True
