"""`createUpload`: a resumable upload made through GraphQL; the bytes then go to its
`uploadUrl` with tus `PATCH` requests (no `POST /uploads` needed)."""

from __future__ import annotations

import strawberry

from clipo_gql import actions
from clipo_gql.auth.quotas import limit_key
from clipo_gql.state import Context
from clipo_gql.tus import uploads
from clipo_gql.tus.protocol import PATH
from clipo_gql.types import BigInt
from clipo_gql.types import Video as VideoType

Info = strawberry.Info[Context, None]


@strawberry.type(description="A resumable upload: send its bytes to `uploadUrl` with tus PATCH.")
class UploadSession:
    upload_url: str = strawberry.field(description="The tus upload URL (absolute).")
    video: VideoType = strawberry.field(description="The video, UPLOADING until its last byte.")


@strawberry.type
class TusMutation:
    # mypy loses the decorator's type through the import cycle schema -> tus -> actions.
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Start a resumable (tus 1.0.0) upload of `sizeBytes` bytes; the video is "
        "UPLOADING until the last byte arrives, then PENDING and queued."
    )
    async def create_upload(self, info: Info, filename: str, size_bytes: BigInt) -> UploadSession:
        context = info.context
        principal = context.principal
        key = limit_key(context.app.settings, principal, context.client_address)
        caller = actions.Caller(principal=principal, limit_key=key)
        doc = await uploads.create_upload(context.app, caller, filename, int(size_bytes))
        return UploadSession(
            upload_url=f"{context.base_url}{PATH}/{doc.id}", video=context.video(doc)
        )
