"""Beanie documents: the only place that names MongoDB fields."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pymongo
from beanie import Document
from bson import ObjectId
from pydantic import BaseModel, Field, field_validator


class VideoStatus(enum.StrEnum):
    UPLOADING = "UPLOADING"  # a resumable upload (tus/) still receiving bytes
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


ANONYMOUS_OWNER = "anonymous"


class Output(enum.StrEnum):
    """What a video's processing publishes, in order: its URLs appear (and its routes answer)
    as each is ready, while the video is still PROCESSING."""

    MP4 = "mp4"  # with the thumbnail and the metadata JSON
    HLS = "hls"
    STORYBOARD = "storyboard"


def has_output(status: VideoStatus, published: Iterable[Output], output: Output) -> bool:
    # A DONE video from before outputs were published one by one has its MP4.
    return output in published or (output is Output.MP4 and status is VideoStatus.DONE)


class Rendition(BaseModel):
    width: int
    height: int
    bit_rate: int  # measured average, bits per second


class WebhookEventType(enum.StrEnum):
    """What a webhook announces (webhooks/): the GraphQL enum, and `type` in its body."""

    VIDEO_CREATED = "video.created"
    VIDEO_READY = "video.ready"
    VIDEO_FAILED = "video.failed"
    VIDEO_DELETED = "video.deleted"


class OutboxEntry(BaseModel):
    """A webhook event not yet handed to its deliveries (webhooks/dispatch.py). It is written
    by the very update that makes the change it announces, so no change goes unannounced."""

    id: str  # the event's `webhook-id`, the same for every delivery and attempt
    type: WebhookEventType
    at: datetime

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class Video(Document):
    filename: str
    # Who may see and change it (auth/ownership.py). Documents from before owners existed
    # are given "anonymous" at start (connections.init_mongo).
    owner_id: str = ANONYMOUS_OWNER
    # What the per-owner limits count it under: the owner, or the client's address with auth
    # off (auth/quotas.py).
    limit_key: str | None = None
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
    published: list[Output] = Field(default_factory=list)
    renditions: list[Rendition] = Field(default_factory=list)

    # A resumable upload (tus/): the length announced at creation, the bytes stored (fsynced)
    # so far, and when it expires unless more bytes arrive. Kept once complete (HEAD tells).
    upload_length: int | None = None
    upload_offset: int | None = None
    upload_expires_at: datetime | None = None

    # Webhook events of this video still to be dispatched, and when a delete began: a delete
    # first records its event here, then removes the document (VideoService.delete).
    webhook_outbox: list[OutboxEntry] = Field(default_factory=list)
    deleting_at: datetime | None = None

    class Settings:
        name = "videos"

    def has(self, output: Output) -> bool:
        return has_output(self.status, self.published, output)

    @field_validator("created_at", "updated_at", "upload_expires_at", "deleting_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Drivers hand back naive datetimes unless the client is tz-aware; they are UTC.
        if value is None:
            return None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @classmethod
    def from_mongo(cls, raw: dict[str, Any]) -> Video:
        video: Video = cls.model_validate(raw)
        return video


class ApiKey(Document):
    """An API key: `clipo_<id>_<secret>`; only a hash of the secret is stored."""

    label: str
    owner_id: str
    admin: bool = False
    secret_sha256: str
    created_at: datetime = Field(default_factory=now)
    last_used_at: datetime | None = None

    class Settings:
        name = "api_keys"


def _utc_or_none(value: datetime | None) -> datetime | None:
    # Drivers hand back naive datetimes unless the client is tz-aware; they are UTC.
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


class WebhookEndpoint(Document):
    """Where an owner wants their videos' events POSTed (webhooks/endpoints.py)."""

    owner_id: str
    url: str  # normalised by ssrf.check_url, and checked again at every delivery
    events: list[WebhookEventType]
    # `whsec_` + base64: the Standard Webhooks signing secret, shown once at creation. Stored
    # as is: signing needs it (unlike an API key, which is only ever compared).
    secret: str
    # The origin the endpoint was created through: the payload's absolute URLs use it when
    # PUBLIC_BASE_URL is unset (a worker has no request to take one from).
    base_url: str
    created_at: datetime = Field(default_factory=now)

    class Settings:
        name = "webhook_endpoints"

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class WebhookDeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class WebhookDelivery(Document):
    """One event to one endpoint: its body, its attempts and what the last one got."""

    endpoint_id: ObjectId
    owner_id: str
    event_id: str
    event_type: WebhookEventType
    body: str  # the exact JSON sent (and signed) at every attempt
    status: WebhookDeliveryStatus = WebhookDeliveryStatus.PENDING
    attempts: int = 0
    # Delays of WEBHOOK_RETRY_SCHEDULE used so far; `redeliverWebhook` starts it over.
    schedule_step: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(default_factory=now)
    event_at: datetime = Field(default_factory=now)
    created_at: datetime = Field(default_factory=now)
    # The TTL index removes the log entry then (WEBHOOK_LOG_RETENTION_SECONDS after creation).
    expires_at: datetime

    model_config = {"arbitrary_types_allowed": True}

    class Settings:
        name = "webhook_deliveries"

    @field_validator("next_attempt_at", "event_at", "created_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _utc_or_none(value)


def _newest_first(*prefix: str) -> pymongo.IndexModel:
    keys = [(field, pymongo.ASCENDING) for field in prefix]
    return pymongo.IndexModel(
        [*keys, ("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
    )


# Created by indexes.ensure_indexes at start, not by Beanie (see indexes.py).
INDEXES: dict[type[Document], list[pymongo.IndexModel]] = {
    # The `videos` pages: newest first, keyset on (created_at, _id); an owner's own (most
    # callers) or everyone's (admins), with or without a status.
    Video: [
        _newest_first(),
        _newest_first("status"),
        _newest_first("owner_id"),
        _newest_first("owner_id", "status"),
        pymongo.IndexModel([("limit_key", pymongo.ASCENDING), ("status", pymongo.ASCENDING)]),
        # The expiry pass (tus/expiry.py): unfinished uploads by expiry.
        pymongo.IndexModel(
            [("status", pymongo.ASCENDING), ("upload_expires_at", pymongo.ASCENDING)]
        ),
        # The webhook pass (webhooks/dispatch.py): events left undispatched by a crash.
        pymongo.IndexModel([("webhook_outbox.at", pymongo.ASCENDING)]),
    ],
    ApiKey: [pymongo.IndexModel([("owner_id", pymongo.ASCENDING)])],
    # Dispatch finds an owner's endpoints for one event type.
    WebhookEndpoint: [pymongo.IndexModel([("owner_id", pymongo.ASCENDING)])],
    WebhookDelivery: [
        # One delivery per event and endpoint: dispatching an event twice (after a crash)
        # finds the first one instead of sending it twice.
        pymongo.IndexModel(
            [("event_id", pymongo.ASCENDING), ("endpoint_id", pymongo.ASCENDING)], unique=True
        ),
        # An endpoint's log, newest first.
        pymongo.IndexModel(
            [("endpoint_id", pymongo.ASCENDING), ("created_at", pymongo.DESCENDING)]
        ),
        # The requeue pass: pending deliveries by due time.
        pymongo.IndexModel([("status", pymongo.ASCENDING), ("next_attempt_at", pymongo.ASCENDING)]),
        # The log cannot grow forever: each entry goes at its `expires_at`.
        pymongo.IndexModel([("expires_at", pymongo.ASCENDING)], expireAfterSeconds=0),
    ],
}
