"""GraphQL types, and their construction from documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

from clipo_gql import models, pagination
from clipo_gql.auth.media_links import Kind, MediaLinks
from clipo_gql.hls.ladder import MASTER
from clipo_gql.models import Output, VideoSource, VideoStatus
from clipo_gql.storage import STORYBOARD_VTT
from clipo_gql.units import duration_text

BigInt = NewType("BigInt", int)
BIG_INT = strawberry.scalar(
    name="BigInt",
    serialize=int,
    parse_value=int,
    description="An integer that may exceed 32 bits (file sizes); a JSON number.",
)
SCALARS: dict[object, ScalarDefinition] = {BigInt: BIG_INT}

# The documents' enums are the GraphQL enums: one list of states, not two to keep in step.
strawberry.enum(models.VideoStatus, description="Where a video is in processing.")
strawberry.enum(models.VideoSource, description="How the video reached us.")


@strawberry.type(description="One rung of a video's HLS ladder.")
class Rendition:
    width: int
    height: int
    bit_rate: int = strawberry.field(description="Measured average, bits per second.")


@strawberry.type(description="An uploaded or submitted video and what processing found.")
class Video:
    id: strawberry.ID
    owner_id: str = strawberry.field(description="Who may see and change it (the JWT's `sub`).")
    filename: str = strawberry.field(description="Original file name, or one derived from the URL.")
    source: VideoSource
    source_url: str | None
    status: VideoStatus
    progress: float | None = strawberry.field(
        description="0.0 to 1.0 while UPLOADING (bytes received) and again while PROCESSING;"
        " 1.0 when DONE."
    )
    error: str | None = strawberry.field(description="Why processing failed, when FAILED.")
    created_at: datetime = strawberry.field(description="The upload time.")
    updated_at: datetime
    size_bytes: BigInt | None = strawberry.field(description="Size of the original file in bytes.")
    duration: float | None = strawberry.field(description="Seconds.")
    duration_text: str | None = strawberry.field(
        description='Duration as HH:MM:SS, e.g. "00:02:45".'
    )
    width: int | None = strawberry.field(description="Displayed width (rotation applied).")
    height: int | None = strawberry.field(description="Displayed height (rotation applied).")
    video_codec: str | None
    audio_codec: str | None = strawberry.field(description="null when the file has no audio.")
    frame_rate: float | None
    bit_rate: int | None
    format_name: str | None
    thumbnail_url: str | None = strawberry.field(
        description=(
            "Absolute URL; null until the MP4 is ready (before DONE when a ladder follows)."
            " Signed and expiring when auth is on, like every URL here."
        )
    )
    stream_url: str | None
    download_url: str | None
    metadata_url: str | None
    metadata_download_url: str | None
    hls_url: str | None = strawberry.field(
        description="The HLS master playlist; null until the ladder is ready, or without HLS."
    )
    renditions: list[Rendition] = strawberry.field(
        description="The ladder's rungs, highest first; empty until it is ready."
    )
    storyboard_url: str | None = strawberry.field(
        description="WebVTT of preview tiles (`#xywh`); null until ready, or without one."
    )

    @classmethod
    def from_document(
        cls, doc: models.Video, base_url: str, links: MediaLinks, expiry: int | None = None
    ) -> Video:
        """`expiry`: of the signed URLs (auth on); the current one by default."""
        vid = str(doc.id)
        expires = links.expiry() if expiry is None else expiry

        def url(path: str, kind: Kind, output: Output = Output.MP4) -> str | None:
            return links.url(base_url, path, vid, kind, expires) if doc.has(output) else None

        return cls(
            id=strawberry.ID(vid),
            owner_id=doc.owner_id,
            filename=doc.filename,
            source=doc.source,
            source_url=doc.source_url,
            status=doc.status,
            progress=doc.progress,
            error=doc.error,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
            size_bytes=BigInt(doc.size_bytes) if doc.size_bytes is not None else None,
            duration=doc.duration,
            duration_text=None if doc.duration is None else duration_text(doc.duration),
            width=doc.width,
            height=doc.height,
            video_codec=doc.video_codec,
            audio_codec=doc.audio_codec,
            frame_rate=doc.frame_rate,
            bit_rate=doc.bit_rate,
            format_name=doc.format_name,
            thumbnail_url=url(f"/thumbnails/{vid}.jpg", Kind.THUMBNAIL),
            stream_url=url(f"/stream/{vid}", Kind.STREAM),
            download_url=url(f"/download/{vid}", Kind.DOWNLOAD),
            metadata_url=url(f"/metadata/{vid}", Kind.METADATA),
            metadata_download_url=url(f"/download/{vid}/metadata", Kind.METADATA_DOWNLOAD),
            hls_url=url(f"/hls/{vid}/{MASTER}", Kind.HLS, Output.HLS),
            renditions=[
                Rendition(width=r.width, height=r.height, bit_rate=r.bit_rate)
                for r in (doc.renditions if doc.has(Output.HLS) else [])
            ],
            storyboard_url=url(f"/storyboard/{vid}/{STORYBOARD_VTT}", Kind.STORYBOARD,
                               Output.STORYBOARD),
        )  # fmt: skip


@strawberry.type
class VideoEdge:
    cursor: str
    node: Video


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="Videos, newest first (Relay-style connection).")
class VideoConnection:
    edges: list[VideoEdge]
    page_info: PageInfo
    matching: strawberry.Private[dict[str, Any]]

    @strawberry.field
    async def total_count(self) -> int:
        return await pagination.count(self.matching)
