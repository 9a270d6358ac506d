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

from clipo_gql.models import ANONYMOUS_OWNER, Output, Video, VideoStatus, has_output

KEPT = 4096  # entries of (id, name, owner): well under a MiB


class Found(NamedTuple):
    status: VideoStatus
    filename: str
    owner_id: str
    published: frozenset[Output] = frozenset()

    def has(self, output: Output) -> bool:
        return has_output(self.status, self.published, output)


class DoneVideos:
    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._found: OrderedDict[ObjectId, Found] = OrderedDict()

    async def find(self, video_id: ObjectId) -> Found | None:
        """The video's status, original file name and owner; None when there is no such video.

        (The owner never changes: an admin reassigning videos in the database should restart
        the API processes, or wait for the entries to age out.)
        """
        found = self._found.get(video_id)
        if found is not None:
            self._found.move_to_end(video_id)
            return found
        # Four fields, straight from the driver: a whole validated document is not needed.
        raw = await Video.get_motor_collection().find_one(
            {"_id": video_id}, {"status": 1, "filename": 1, "owner_id": 1, "published": 1}
        )
        if raw is None:
            return None
        found = Found(
            VideoStatus(raw["status"]),
            raw["filename"],
            raw.get("owner_id", ANONYMOUS_OWNER),
            frozenset(Output(value) for value in raw.get("published") or ()),
        )
        if found.status is VideoStatus.DONE:
            self._found[video_id] = found
            if len(self._found) > self._kept:
                self._found.popitem(last=False)
        return found

    def forget(self, video_id: ObjectId) -> None:
        self._found.pop(video_id, None)
