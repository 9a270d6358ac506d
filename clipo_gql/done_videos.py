"""Which videos are DONE, for the file routes: remembered, since a player asks per range.

A `<video>` element fetches a file in many Range requests, and each needs "is this video DONE,
and what was its file called". DONE is final (only a delete ends it, and a delete removes the
files), so a DONE answer is kept, and the routes ask again only when the file is gone. Looking
the video up for every range was a third of the CPU of serving one (bench row 4).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from bson import ObjectId

from clipo_gql.models import Video, VideoStatus

KEPT = 4096  # entries of (id, name): well under a MiB


class Found(NamedTuple):
    status: VideoStatus
    filename: str


class DoneVideos:
    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._names: OrderedDict[ObjectId, str] = OrderedDict()

    async def find(self, video_id: ObjectId) -> Found | None:
        """The video's status and original file name; None when there is no such video."""
        name = self._names.get(video_id)
        if name is not None:
            self._names.move_to_end(video_id)
            return Found(VideoStatus.DONE, name)
        # Two fields, straight from the driver: a whole validated document is not needed here.
        raw = await Video.get_motor_collection().find_one(
            {"_id": video_id}, {"status": 1, "filename": 1}
        )
        if raw is None:
            return None
        found = Found(VideoStatus(raw["status"]), raw["filename"])
        if found.status is VideoStatus.DONE:
            self._names[video_id] = found.filename
            if len(self._names) > self._kept:
                self._names.popitem(last=False)
        return found

    def forget(self, video_id: ObjectId) -> None:
        self._names.pop(video_id, None)
