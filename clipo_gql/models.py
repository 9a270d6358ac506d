"""Beanie documents: the only place that names MongoDB fields."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import pymongo
from beanie import Document
from pydantic import Field, field_validator


class VideoStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    DONE = "DONE"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (VideoStatus.DONE, VideoStatus.FAILED)


class VideoSource(enum.StrEnum):
    UPLOAD = "UPLOAD"
    URL = "URL"


def now() -> datetime:
    # MongoDB keeps milliseconds: truncate here so a stored value equals the one in memory
    # (pagination cursors compare them).
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


class Video(Document):
    filename: str
    source: VideoSource
    source_url: str | None = None
    status: VideoStatus = VideoStatus.PENDING
    progress: float | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)
    # Bumped by every stored change: subscribers drop events older than what they have shown.
    version: int = 0
    attempts: int = 0

    size_bytes: int | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    frame_rate: float | None = None
    bit_rate: int | None = None
    format_name: str | None = None
    remuxed: bool | None = None

    class Settings:
        name = "videos"

    @field_validator("created_at", "updated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # Drivers hand back naive datetimes unless the client is tz-aware; they are UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @classmethod
    def from_mongo(cls, raw: dict[str, Any]) -> Video:
        video: Video = cls.model_validate(raw)
        return video


# Created by indexes.ensure_indexes at start, not by Beanie (see indexes.py).
INDEXES: dict[type[Document], list[pymongo.IndexModel]] = {
    Video: [
        # The `videos` pages: newest first, keyset on (created_at, _id), with or without status.
        pymongo.IndexModel([("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]),
        pymongo.IndexModel(
            [
                ("status", pymongo.ASCENDING),
                ("created_at", pymongo.DESCENDING),
                ("_id", pymongo.DESCENDING),
            ]
        ),
    ],
}
