"""The Strawberry view: our context, streamed multipart uploads, and errors as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException, StarletteRequestAdapter
from cross_web.request._base import FormData
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from clipo_gql import graphiql
from clipo_gql.auth.credentials import from_connection_params
from clipo_gql.auth.principal import Principal
from clipo_gql.auth.quotas import WS_TRY_AGAIN_LATER, limit_key
from clipo_gql.errors import (
    BadUserInputError,
    ClipoError,
    MutationOverGetError,
    NotAcceptableError,
    UnauthenticatedError,
)
from clipo_gql.fanout import SUBSCRIBER, Subscriber, encode_shared, message_head
from clipo_gql.http_negotiation import JSON, choose, content_type, media_type_of, result_answer
from clipo_gql.limits import error_response
from clipo_gql.ops.metrics import UPLOAD_BYTES, WEBSOCKET_MESSAGES
from clipo_gql.settings import Settings
from clipo_gql.state import Context, app_state
from clipo_gql.uploads import MultipartLimits, ReceivedFile, receive_multipart
from clipo_gql.ws_protocol import SEND_FRAME

PREFLIGHT_HEADERS = ("apollo-require-preflight", "x-apollo-operation-name")
log = logging.getLogger(__name__)
RECEIVED = "clipo_received_files"
PRINCIPAL = "clipo_principal"
WS_CLIENT = "clipo_ws_client"


class StreamingUploadAdapter(StarletteRequestAdapter):
    """Multipart bodies are streamed straight into MEDIA_DIR instead of spooled and copied."""

    async def get_form_data(self) -> FormData:
        request: Request = self._request
        headers = request.headers
        # multipart/form-data is a "simple" request that any web page may send cross-site;
        # a custom header forces the browser's CORS preflight (the multipart spec's advice).
        if not any(headers.get(name, "").strip() for name in PREFLIGHT_HEADERS):
            raise BadUserInputError(
                "Multipart requests must carry a non-empty `apollo-require-preflight` header"
                " (CSRF protection)"
            )
        app = app_state(request)
        # Who asks, and whether they may add a video at all, before a byte is stored.
        principal = await authenticate(request)
        app.quotas.check_disk()
        client = request.client.host if request.client else None
        await app.quotas.check_rate(limit_key(app.settings, principal, client))
        received: list[ReceivedFile] = request.scope.setdefault(RECEIVED, [])
        fields, files = await receive_multipart(
            request,
            app.storage.uploads,
            MultipartLimits(max_file_bytes=app.settings.max_upload_bytes),
            app.storage.remote,
        )
        received.extend(files.values())
        UPLOAD_BYTES.inc(sum(file.size for file in files.values()))
        for name in ("operations", "map"):
            if name not in fields:
                raise BadUserInputError(f"The multipart request has no `{name}` field")
            try:
                json.loads(fields[name])
            except ValueError as exc:
                raise BadUserInputError(f"The `{name}` field is not valid JSON") from exc
        return FormData(files=files, form=fields)


async def authenticate(request: Request) -> Principal:
    """The request's principal (UnauthenticatedError without a valid credential), once."""
    principal: Principal | None = request.scope.get(PRINCIPAL)
    if principal is None:
        app = app_state(request)
        principal = await app.auth.authenticate(request.headers.get("authorization"))
        request.scope[PRINCIPAL] = principal
    return principal


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """`graphql-transport-ws`, whose operations may be sent states by fanout.DirectQueue."""

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        assert isinstance(self.websocket, CountingWebSocketAdapter)
        send_frame = self.websocket.frame_sender()
        if send_frame is not None:
            # In the operation's own task (and context): its subscription resolver finds it.
            SUBSCRIBER.set(
                Subscriber(
                    head=message_head("next", operation.id, id_first=True),
                    alive=lambda: (
                        self.operations.get(operation.id) is operation and not operation.completed
                    ),
                    send_frame=send_frame,
                )
            )
        await super().run_operation(operation)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy `graphql-ws` subprotocol, with the `connection_init` deadline Strawberry
    enforces only for `graphql-transport-ws`: a silent socket would be held open for ever.
    Its operations may be sent states by fanout.DirectQueue too."""

    async def handle(self) -> None:
        deadline = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            deadline.cancel()

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        assert isinstance(self.websocket, CountingWebSocketAdapter)
        send_frame = self.websocket.frame_sender()
        task = asyncio.current_task()
        if send_frame is not None and task is not None:
            SUBSCRIBER.set(
                Subscriber(
                    head=message_head("data", operation_id, id_first=False),
                    # A `stop`, or a `start` reusing the id, takes the task out of `tasks`.
                    alive=lambda: self.tasks.get(operation_id) is task,
                    send_frame=send_frame,
                )
            )
        await super().handle_async_results(operation_id, query, operation_name, variables)

    async def _close_unless_initialised(self) -> None:
        assert isinstance(self.view, ClipoGraphQL)
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            await self.websocket.close(code=4408, reason="Connection initialisation timeout")


class CountingWebSocketAdapter(ASGIWebSocketAdapter):
    async def send_json(self, message: Mapping[str, object]) -> None:
        await super().send_json(message)
        WEBSOCKET_MESSAGES.inc()

    def frame_sender(self) -> Callable[[bytes], bool] | None:
        """The server's synchronous frame write (ws_protocol.py), counted; None without one."""
        send_frame: Callable[[bytes], bool] | None = (self.ws.scope.get("extensions") or {}).get(
            SEND_FRAME
        )
        if send_frame is None:
            return None
        write = send_frame

        def counted(frame: bytes) -> bool:
            sent = write(frame)
            if sent:
                _direct_sent.add()
            return sent

        return counted


class _Tally:
    """Frames written by fan-out, added to WEBSOCKET_MESSAGES once per loop pass: one
    counter increment (a lock) per subscriber was a tenth of a direct send."""

    def __init__(self) -> None:
        self.count = 0

    def add(self) -> None:
        if not self.count:
            asyncio.get_running_loop().call_soon(self._flush)
        self.count += 1

    def _flush(self) -> None:
        WEBSOCKET_MESSAGES.inc(self.count)
        self.count = 0


_direct_sent = _Tally()


class ClipoGraphQL(GraphQL[Context, None]):
    request_adapter_class = StreamingUploadAdapter
    websocket_adapter_class = CountingWebSocketAdapter
    graphql_ws_handler_class = LegacyWSHandler
    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, schema: BaseSchema, settings: Settings) -> None:
        super().__init__(
            schema,
            multipart_uploads_enabled=True,
            connection_init_wait_timeout=timedelta(
                seconds=settings.ws_connection_init_timeout_seconds
            ),
            max_subscriptions_per_connection=settings.ws_max_subscriptions,
            allowed_origins=settings.origins,
        )
        self.graphiql = graphiql.files_for(settings)

    async def render_graphql_ide(self, request: Request) -> Response:
        # Strawberry's page loads GraphiQL from a CDN; ours only from this server.
        return graphiql.page(request, self.graphiql)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return Context(request=request, response=response, app=app_state(request))

    async def on_ws_connect(self, context: Context) -> UnsetType | None | dict[str, object]:
        """`connection_init`: authenticate the socket (its payload's `authorization`, else the
        upgrade request's header) and count it under its owner from now on."""
        websocket = context.request
        credential = from_connection_params(
            context.connection_params, websocket.headers.get("authorization")
        )
        try:
            principal = await context.app.auth.authenticate(credential)
        except UnauthenticatedError as exc:
            raise ConnectionRejectionError({"message": exc.message}) from None
        if context.app.settings.auth_required:
            refused = context.app.sockets.move(
                websocket.scope[WS_CLIENT], f"owner:{principal.owner_id}"
            )
            if refused is not None:
                raise ConnectionRejectionError({"message": refused})
            websocket.scope[WS_CLIENT] = f"owner:{principal.owner_id}"
        context.authenticated = principal
        unset: UnsetType = UNSET
        return unset

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        # create_response is not given the request: the negotiated media type travels here.
        sub_response.media_type = media_type_of(request.headers)
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or JSON
        status = 200
        if isinstance(response_data, dict):  # batches are refused in execute_operation
            status, response_data = result_answer(media_type, response_data)
        response = super().create_response(response_data, sub_response)
        if media_type != JSON:
            response.headers["content-type"] = content_type(media_type)
            response.status_code = sub_response.status_code or status
        return response

    async def parse_http_body(
        self, request_adapter: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        # After the GraphiQL page (a browser asks for text/html) and before any body is read.
        if choose(request_adapter.headers.get("accept")) is None:
            raise NotAcceptableError(
                "Accept names no media type this server produces: application/json or"
                " application/graphql-response+json"
            )
        return await super().parse_http_body(request_adapter)

    def encode_json(self, data: object) -> str | bytes:
        # A status change watched by many: its data is serialised once, not per subscriber.
        shared = encode_shared(data) if isinstance(data, Mapping) else None
        return shared if shared is not None else super().encode_json(data)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        response: Response | None = None
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except ClipoError as exc:
            response = error_response(exc)
        except HTTPException as exc:
            # Strawberry's own refusals (a body that is not JSON, no query, a mutation over
            # GET...) are plain text: give them the JSON error shape every other refusal has.
            response = error_response(BadUserInputError(exc.reason), status_code=exc.status_code)
        except ClientDisconnect:
            pass  # nobody is left to answer
        finally:
            # Files the mutation did not move into a video's folder are not wanted.
            for received in scope.get(RECEIVED, ()):
                try:
                    await app_state(Request(scope=scope)).storage.discard(received)
                except OSError as exc:  # the sweeper removes it once the store answers
                    log.warning("could not remove an unused upload: %s", exc)
        if response is not None:
            await response(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the socket per client address (and in all) before it is served."""
        sockets = app_state(WebSocket(scope, receive, send)).sockets
        client = f"address:{scope['client'][0] if scope.get('client') else 'unknown'}"
        refused = sockets.acquire(client)
        if refused is not None:
            websocket = WebSocket(scope, receive, send)
            offered = scope.get("subprotocols") or [None]
            await websocket.accept(subprotocol=offered[0])
            await websocket.close(code=WS_TRY_AGAIN_LATER, reason=refused)
            return
        scope[WS_CLIENT] = client
        try:
            await super().__call__(scope, receive, send)
        finally:
            sockets.release(scope[WS_CLIENT])

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        # Only plain single requests: no batches, and no subscriptions streamed over HTTP
        # (they would bypass the websocket limits); subscriptions are websocket-only.
        if isinstance(request_data, list):
            raise HTTPException(400, "Batched requests are not supported")
        allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
        context.authenticated = await authenticate(request)
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(
                    400, "Subscriptions are served over websockets only (WS /graphql)"
                ) from exc
            raise MutationOverGetError(exc.as_http_error_reason(request_adapter.method)) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc
