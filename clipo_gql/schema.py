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

from clipo_gql import actions
from clipo_gql.auth.graphql import AuthMutation, AuthQuery
from clipo_gql.auth.ownership import find_video, listing_scope
from clipo_gql.auth.quotas import limit_key
from clipo_gql.errors import BadUserInputError
from clipo_gql.fanout import DirectQueue, SharedEventExecutor, shared_view
from clipo_gql.graphql_errors import ErrorCodes, log_unexpected
from clipo_gql.models import VideoStatus
from clipo_gql.ops.graphql import OpsQuery
from clipo_gql.ops.metrics import SUBSCRIPTIONS
from clipo_gql.ops.operation_metrics import OperationMetrics
from clipo_gql.pagination import encode_cursor, page
from clipo_gql.query_cache import QUERY_CACHE_SIZE, ParseOnce
from clipo_gql.query_limits import alias_limit, depth_limit
from clipo_gql.state import Context
from clipo_gql.storage import parse_id
from clipo_gql.tus.graphql import TusMutation
from clipo_gql.types import SCALARS, PageInfo, Video, VideoConnection, VideoEdge
from clipo_gql.uploads import ReceivedFile
from clipo_gql.webhooks.graphql import WebhookMutation, WebhookQuery

if TYPE_CHECKING:
    from clipo_gql.settings import Settings

Info = strawberry.Info[Context, None]
DEFAULT_PAGE = 20


def _video_id(value: strawberry.ID) -> ObjectId:
    video_id = parse_id(str(value))
    if video_id is None:
        raise BadUserInputError("Malformed video id: expected 24 hexadecimal characters")
    return video_id


def _caller(info: Info) -> actions.Caller:
    context = info.context
    principal = context.principal
    key = limit_key(context.app.settings, principal, context.client_address)
    return actions.Caller(principal=principal, limit_key=key)


@strawberry.type
class Query(AuthQuery, OpsQuery, WebhookQuery):
    @strawberry.field(description="A video by id; null when there is none (or it is not yours).")
    async def video(self, info: Info, id: strawberry.ID) -> Video | None:
        doc = await find_video(info.context.principal, _video_id(id))
        return info.context.video(doc) if doc else None

    @strawberry.field(
        description="Your videos (admins: everyone's), newest first; `first` is at most 100. "
        "`owner` narrows to one owner: admins any, others only themselves."
    )
    async def videos(
        self,
        info: Info,
        first: int | None = DEFAULT_PAGE,
        after: str | None = None,
        status: VideoStatus | None = None,
        owner: str | None = None,
    ) -> VideoConnection:
        scope = listing_scope(info.context.principal, owner)
        docs, has_next, matching = await page(
            DEFAULT_PAGE if first is None else first, after, status, scope
        )
        edges = [VideoEdge(cursor=encode_cursor(d), node=info.context.video(d)) for d in docs]
        return VideoConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            matching=matching,
        )


@strawberry.type
class Mutation(AuthMutation, TusMutation, WebhookMutation):
    @strawberry.mutation(
        description="Upload a video (GraphQL multipart request); returned PENDING and queued."
    )
    async def upload_video(self, info: Info, file: Upload) -> Video:
        if not isinstance(file, ReceivedFile):
            raise BadUserInputError(
                "`file` must be a file part of a multipart request (GraphQL multipart request spec)"
            )
        doc = await actions.accept_upload(info.context.app, _caller(info), file)
        return info.context.video(doc)

    @strawberry.mutation(
        description="Submit a video by http(s) URL; the worker downloads it, then processes it."
    )
    async def submit_video(self, info: Info, url: str) -> Video:
        doc = await actions.accept_url(info.context.app, _caller(info), url)
        return info.context.video(doc)

    @strawberry.mutation(description="Queue a FAILED video again (INVALID_STATE otherwise).")
    async def retry_video(self, info: Info, id: strawberry.ID) -> Video:
        doc = await actions.retry(info.context.app, info.context.principal, _video_id(id))
        return info.context.video(doc)

    @strawberry.mutation(
        description="Delete a video and all its files, also while it is processing. "
        "false when there was no such video (or it is not yours)."
    )
    async def delete_video(self, info: Info, id: strawberry.ID) -> bool:
        return await actions.delete(info.context.app, info.context.principal, _video_id(id))


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The video's current state, then every change; completes after DONE or FAILED."
    )
    async def video_status(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Video, None]:
        video_id = _video_id(id)
        context = info.context
        app = context.app
        SUBSCRIPTIONS.inc()
        try:
            # The states after the first that it can, the queue sends itself (fanout.py).
            queue = DirectQueue(context.base_url, app.links)
            async for doc in app.videos.watch(app.hub, video_id, context.principal, queue):
                yield shared_view(doc, context.base_url, app.links)
        finally:
            SUBSCRIPTIONS.dec()


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
    ]
    if settings is None or settings.metrics_enabled:
        extensions.append(OperationMetrics)
    extensions.append(ErrorCodes)
    return ClipoSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=SharedEventExecutor,
        config=StrawberryConfig(disable_field_suggestions=True, scalar_map=SCALARS),
    )


schema = build_schema()
