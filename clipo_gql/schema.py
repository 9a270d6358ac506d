"""Query, Mutation and Subscription roots: thin resolvers over the services."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

import strawberry
from bson import ObjectId
from graphql import GraphQLError
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.file_uploads import Upload
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from clipo_gql import actions, models
from clipo_gql.errors import BadUserInputError
from clipo_gql.fanout import SharedEventExecutor, shared_view
from clipo_gql.graphql_errors import ErrorCodes, log_unexpected
from clipo_gql.models import VideoStatus
from clipo_gql.pagination import encode_cursor, page
from clipo_gql.query_cache import QUERY_CACHE_SIZE, ParseOnce
from clipo_gql.query_limits import alias_limit, depth_limit
from clipo_gql.state import Context
from clipo_gql.storage import parse_id
from clipo_gql.types import SCALARS, PageInfo, Video, VideoConnection, VideoEdge
from clipo_gql.uploads import ReceivedFile

if TYPE_CHECKING:
    from clipo_gql.settings import Settings

Info = strawberry.Info[Context, None]
DEFAULT_PAGE = 20


def _video_id(value: strawberry.ID) -> ObjectId:
    video_id = parse_id(str(value))
    if video_id is None:
        raise BadUserInputError("Malformed video id: expected 24 hexadecimal characters")
    return video_id


@strawberry.type
class Query:
    @strawberry.field(description="A video by id; null when there is none.")
    async def video(self, info: Info, id: strawberry.ID) -> Video | None:
        doc = await models.Video.get(_video_id(id))
        return Video.from_document(doc, info.context.base_url) if doc else None

    @strawberry.field(description="Videos, newest first; `first` is at most 100.")
    async def videos(
        self,
        info: Info,
        first: int | None = DEFAULT_PAGE,
        after: str | None = None,
        status: VideoStatus | None = None,
    ) -> VideoConnection:
        docs, has_next, matching = await page(
            DEFAULT_PAGE if first is None else first, after, status
        )
        base = info.context.base_url
        edges = [
            VideoEdge(cursor=encode_cursor(d), node=Video.from_document(d, base)) for d in docs
        ]
        return VideoConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            matching=matching,
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Upload a video (GraphQL multipart request); returned PENDING and queued."
    )
    async def upload_video(self, info: Info, file: Upload) -> Video:
        if not isinstance(file, ReceivedFile):
            raise BadUserInputError(
                "`file` must be a file part of a multipart request (GraphQL multipart request spec)"
            )
        doc = await actions.accept_upload(info.context.app, file)
        return Video.from_document(doc, info.context.base_url)

    @strawberry.mutation(
        description="Submit a video by http(s) URL; the worker downloads it, then processes it."
    )
    async def submit_video(self, info: Info, url: str) -> Video:
        doc = await actions.accept_url(info.context.app, url)
        return Video.from_document(doc, info.context.base_url)

    @strawberry.mutation(description="Queue a FAILED video again (INVALID_STATE otherwise).")
    async def retry_video(self, info: Info, id: strawberry.ID) -> Video:
        doc = await actions.retry(info.context.app, _video_id(id))
        return Video.from_document(doc, info.context.base_url)

    @strawberry.mutation(
        description="Delete a video and all its files, also while it is processing. "
        "false when there was no such video."
    )
    async def delete_video(self, info: Info, id: strawberry.ID) -> bool:
        return await actions.delete(info.context.app, _video_id(id))


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The video's current state, then every change; completes after DONE or FAILED."
    )
    async def video_status(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Video, None]:
        video_id = _video_id(id)
        app = info.context.app
        async for doc in app.videos.watch(app.hub, video_id):
            yield shared_view(doc, info.context.base_url)


class ClipoSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry logs every error with its stack; expected ones are the client's business.
        log_unexpected(errors)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    """The schema; with `settings`, the limits that protect a running server as well."""
    extensions: list[Callable[[], SchemaExtension]] = []
    if settings is not None:
        limits = settings
        # Built once: the validation cache is keyed by the rule classes as well.
        rules: list[type[ASTValidationRule]] = [
            depth_limit(limits.graphql_max_depth),
            alias_limit(limits.graphql_max_aliases),
        ]
        if not settings.graphql_introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        extensions += [
            lambda: MaxTokensLimiter(max_token_count=limits.graphql_max_tokens),
            lambda: AddValidationRules(rules),
        ]
    extensions += [
        # One parsed document per query text: the subscribers of one query then share the
        # operation node, which is what lets `SharedEventExecutor` share their results; and the
        # validation cache is keyed by that document.
        ParseOnce,
        lambda: ValidationCache(maxsize=QUERY_CACHE_SIZE),
        ErrorCodes,
    ]
    return ClipoSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=SharedEventExecutor,
        config=StrawberryConfig(disable_field_suggestions=True, scalar_map=SCALARS),
    )


schema = build_schema()
