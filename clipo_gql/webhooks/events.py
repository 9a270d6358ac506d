"""A webhook event: its id, its type and the body every delivery of it sends.

The body is `{"type": "video.ready", "timestamp": "<ISO 8601>", "data": {"video": {...}}}`,
the video with its GraphQL field names and absolute URLs (signed when auth is on, and then
valid for MEDIA_URL_TTL_SECONDS from the event: a receiver that wants them later asks the API).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import datetime
from typing import Any

from bson import ObjectId
from strawberry.utils.str_converters import to_camel_case

from clipo_gql.auth.media_links import MediaLinks
from clipo_gql.models import OutboxEntry, Video, WebhookEventType, now
from clipo_gql.types import Video as VideoType


def new_event(event_type: WebhookEventType) -> OutboxEntry:
    # `msg_` as the Standard Webhooks examples: receivers log it beside their own ids.
    return OutboxEntry(id=f"msg_{ObjectId()}", type=event_type, at=now())


def outbox_document(event: OutboxEntry) -> dict[str, Any]:
    """`event` as the outbox stores it: what `$push` adds and `$pullAll` matches."""
    return event.model_dump(mode="python")


def outbox_push(event: OutboxEntry) -> dict[str, Any]:
    """The `$push` that records `event` in the same update as the change it announces."""
    return {"webhook_outbox": outbox_document(event)}


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(video: Video, event: OutboxEntry, base_url: str, links: MediaLinks) -> str:
    view = VideoType.from_document(video, base_url, links)
    return json.dumps(
        {"type": event.type.value, "timestamp": iso(event.at), "data": {"video": _json(view)}},
        separators=(",", ":"),
    )


def _json(value: Any) -> Any:
    """A Strawberry object as GraphQL would answer it: camelCase names, ISO dates, enum values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            to_camel_case(f.name): _json(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()  # as Strawberry's DateTime: the same text as a query gets
    return value
