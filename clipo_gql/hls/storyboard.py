"""The storyboard: one JPEG sprite of evenly spaced frames and a WebVTT file whose cues
point at its tiles (`storyboard.jpg#xywh=x,y,w,h`), for previews while scrubbing.

A frame every 2 s at least, and at most MAX_TILES of them (a long video's spacing grows),
160 px wide. Made in the ladder's decode pass (ladder.py) when there is a ladder; else in a
pass of its own (`Media.storyboard`), which decodes the whole video too: a keyframe-only
decode would be faster, but its tiles would fall wherever the source's keyframes are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipo_gql.storage import STORYBOARD_SPRITE as SPRITE

if TYPE_CHECKING:
    from clipo_gql.media import ProbeResult

TILE_WIDTH = 160
MAX_TILES = 100
MIN_INTERVAL_SECONDS = 2.0
COLUMNS = 10


@dataclass(frozen=True)
class StoryboardPlan:
    duration: float
    interval: float
    tiles: int  # at most
    tile_width: int
    tile_height: int

    def filter(self) -> str:
        """The filter chain that turns a video stream into tiles, one JPEG each: the first
        frame at or after each multiple of the interval (the first frame always, so a clip
        shorter than one interval has its tile). Tiling in the same graph would hold back
        ffmpeg's `-progress` until the sprite is whole, at the end: the tiles are put
        together afterwards, by `sprite_filter`."""
        i = f"{self.interval:.6f}"
        return (
            f"select='gte(t\\,ld(0))*st(0\\,(floor(t/{i})+1)*{i})',"
            f"scale=w={self.tile_width}:h={self.tile_height},setsar=1"
        )

    def grid(self, count: int) -> tuple[int, int]:
        columns = min(COLUMNS, max(1, count))
        return columns, math.ceil(max(1, count) / columns)

    def sprite_filter(self, count: int) -> str:
        columns, rows = self.grid(count)
        return f"tile={columns}x{rows}"

    def vtt(self, count: int, sprite_url: str = SPRITE) -> str:
        """Cues from 0 to the duration without gaps, one a tile; `count` is how many tiles
        ffmpeg made (the last cue runs to the end)."""
        count = max(1, min(count, self.tiles))
        columns, _ = self.grid(count)
        lines = ["WEBVTT", ""]
        for n in range(count):
            start = n * self.interval
            end = self.duration if n == count - 1 else (n + 1) * self.interval
            x = (n % columns) * self.tile_width
            y = (n // columns) * self.tile_height
            lines += [
                f"{_timestamp(start)} --> {_timestamp(end)}",
                f"{sprite_url}#xywh={x},{y},{self.tile_width},{self.tile_height}",
                "",
            ]
        return "\n".join(lines)


def plan(probe: ProbeResult, aspect: float) -> StoryboardPlan:
    duration = max(probe.duration, 0.001)
    interval = max(MIN_INTERVAL_SECONDS, duration / MAX_TILES)
    tiles = max(1, min(MAX_TILES, math.ceil(duration / interval - 1e-6)))
    height = max(2, int(round(TILE_WIDTH / aspect / 2)) * 2)
    return StoryboardPlan(duration, interval, tiles, TILE_WIDTH, height)


def _timestamp(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02}:{minutes:02}:{secs:02}.{millis:03}"
