"""The GraphQL side of webhooks: `webhookEndpoints`, `webhookDeliveries`,
`createWebhookEndpoint`, `deleteWebhookEndpoint`, `redeliverWebhook` (api-next.md § E)."""

from __future__ import annotations

from datetime import datetime

import strawberry
from beanie import SortDirection
from bson import ObjectId

from clipo_gql import models
from clipo_gql.auth.ownership import scope
from clipo_gql.errors import BadUserInputError, NotFoundError
from clipo_gql.models import WebhookDelivery as DeliveryDocument
from clipo_gql.models import WebhookEndpoint as EndpointDocument
from clipo_gql.state import Context
from clipo_gql.storage import parse_id
from clipo_gql.webhooks import endpoints, jobs

Info = strawberry.Info[Context, None]
MAX_DELIVERIES = 100

# The documents' enums are the GraphQL enums (as types.py does for VideoStatus).
strawberry.enum(models.WebhookEventType, description="What a webhook announces.")
strawberry.enum(
    models.WebhookDeliveryStatus,
    description="PENDING until a 2xx (DELIVERED) or the last retry failed (FAILED).",
)
WebhookEventType = models.WebhookEventType
WebhookDeliveryStatus = models.WebhookDeliveryStatus


@strawberry.type(description="Where your videos' events are POSTed, signed (Standard Webhooks).")
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    events: list[WebhookEventType]
    created_at: datetime

    @classmethod
    def from_document(cls, doc: EndpointDocument) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(str(doc.id)), url=doc.url, events=list(doc.events),
            created_at=doc.created_at,
        )  # fmt: skip


@strawberry.type(description="A new endpoint and its signing secret, which is shown only here.")
class WebhookEndpointCreated:
    secret: str = strawberry.field(
        description="`whsec_` + base64: give it to a `standardwebhooks` library to verify us."
    )
    endpoint: WebhookEndpoint


@strawberry.type(description="One event sent to one endpoint, with its attempts.")
class WebhookDelivery:
    id: strawberry.ID
    event_id: str = strawberry.field(description="The `webhook-id` header: the same each try.")
    event_type: WebhookEventType
    status: WebhookDeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def from_document(cls, doc: DeliveryDocument) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(str(doc.id)),
            event_id=doc.event_id,
            event_type=doc.event_type,
            status=doc.status,
            attempts=doc.attempts,
            last_status_code=doc.last_status_code,
            last_error=doc.last_error,
            next_attempt_at=doc.next_attempt_at,  # None once DELIVERED or FAILED
            created_at=doc.created_at,
        )


def _id(value: strawberry.ID, what: str) -> ObjectId:
    oid = parse_id(str(value))
    if oid is None:
        raise BadUserInputError(f"Malformed {what} id: expected 24 hexadecimal characters")
    return oid


@strawberry.type
class WebhookQuery:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Your webhook endpoints (admins: everyone's), oldest first."
    )
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        docs = await endpoints.listing(info.context.principal)
        return [WebhookEndpoint.from_document(d) for d in docs]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="An endpoint's deliveries, newest first; `first` is at most 100. "
        "NOT_FOUND for an endpoint that is not there (or not yours)."
    )
    async def webhook_deliveries(
        self, info: Info, endpoint_id: strawberry.ID, first: int | None = 20
    ) -> list[WebhookDelivery]:
        oid = _id(endpoint_id, "endpoint")
        first = 20 if first is None else first
        if not 0 <= first <= MAX_DELIVERIES:
            raise BadUserInputError(f"`first` must be from 0 to {MAX_DELIVERIES}")
        endpoint = await endpoints.find(info.context.principal, oid)
        if endpoint is None:
            raise NotFoundError("No webhook endpoint with this id")
        docs = (
            await DeliveryDocument.find({"endpoint_id": oid})
            .sort([("created_at", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)])
            .limit(first)
            .to_list()
        )
        return [WebhookDelivery.from_document(d) for d in docs]


@strawberry.type
class WebhookMutation:
    # mypy loses the decorator's type through the import cycle schema -> webhooks -> state.
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Add an endpoint for your videos' events (`events` null: all of them). "
        "The URL follows the `submitVideo` rules (FORBIDDEN_URL), checked again at each delivery."
    )
    async def create_webhook_endpoint(
        self, info: Info, url: str, events: list[WebhookEventType] | None = None
    ) -> WebhookEndpointCreated:
        context = info.context
        doc = await endpoints.create(
            context.app.settings,
            context.principal,
            url,
            events,
            context.base_url,
        )
        return WebhookEndpointCreated(
            secret=doc.secret, endpoint=WebhookEndpoint.from_document(doc)
        )

    # mypy loses the decorator's type through the import cycle schema -> webhooks -> state.
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Remove an endpoint and its delivery log; nothing more is sent to it. "
        "false when there was none (or it is not yours)."
    )
    async def delete_webhook_endpoint(self, info: Info, id: strawberry.ID) -> bool:
        return await endpoints.delete(info.context.principal, _id(id, "endpoint"))

    # mypy loses the decorator's type through the import cycle schema -> webhooks -> state.
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Send a delivery again now, with a fresh retry schedule; the same "
        "`webhook-id`. NOT_FOUND for one that is not there (or not yours)."
    )
    async def redeliver_webhook(self, info: Info, delivery_id: strawberry.ID) -> WebhookDelivery:
        oid = _id(delivery_id, "delivery")
        principal = info.context.principal
        found = await DeliveryDocument.find_one({"_id": oid, **scope(principal)})
        if found is None or await endpoints.find(principal, found.endpoint_id) is None:
            raise NotFoundError("No webhook delivery with this id")
        app = info.context.app
        return WebhookDelivery.from_document(await jobs.redeliver(app.redis, app.settings, oid))
