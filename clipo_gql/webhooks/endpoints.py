"""An owner's webhook endpoints: created with a URL the SSRF policy allows (checked again at
every delivery, DNS may change), listed, deleted with their pending deliveries."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

from bson import ObjectId

from clipo_gql.auth.ownership import scope
from clipo_gql.auth.principal import Principal
from clipo_gql.errors import QuotaExceededError
from clipo_gql.models import WebhookDelivery, WebhookEndpoint, WebhookEventType
from clipo_gql.settings import Settings
from clipo_gql.ssrf import AddressPolicy, validate_url

# 24 random bytes: Standard Webhooks asks for 24 to 64.
SECRET_BYTES = 24


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


async def create(
    settings: Settings,
    principal: Principal,
    url: str,
    events: Sequence[WebhookEventType] | None,
    base_url: str,
    policy: AddressPolicy | None = None,
) -> WebhookEndpoint:
    """Raises ForbiddenUrlError (the `submitVideo` rules) or QuotaExceededError."""
    checked = await validate_url(url, settings, policy)
    owned = await WebhookEndpoint.find({"owner_id": principal.owner_id}).count()
    if owned >= settings.webhook_max_endpoints:
        raise QuotaExceededError(
            f"You have {owned} webhook endpoints, the most allowed; delete one to add another"
        )
    endpoint = WebhookEndpoint(
        owner_id=principal.owner_id,
        url=checked.url,
        # null: every type, stored as the list so dispatch asks one question of every endpoint
        events=list(dict.fromkeys(events)) if events else list(WebhookEventType),
        secret=new_secret(),
        base_url=base_url,
    )
    await endpoint.insert()
    return endpoint


async def any_for(owner_id: str) -> bool:
    """Whether the owner has an endpoint: without one, their videos' changes carry no event."""
    return await WebhookEndpoint.find_one({"owner_id": owner_id}) is not None


async def listing(principal: Principal) -> list[WebhookEndpoint]:
    """The principal's endpoints (an admin's: everyone's), oldest first."""
    return await WebhookEndpoint.find(scope(principal)).sort("created_at", "_id").to_list()


async def find(principal: Principal, endpoint_id: ObjectId) -> WebhookEndpoint | None:
    """The endpoint if the principal may see it; None either way otherwise (ownership.py)."""
    return await WebhookEndpoint.find_one({"_id": endpoint_id, **scope(principal)})


async def delete(principal: Principal, endpoint_id: ObjectId) -> bool:
    """Remove the endpoint and its log: a job already queued for it finds nothing to send."""
    result = await WebhookEndpoint.get_motor_collection().delete_one(
        {"_id": endpoint_id, **scope(principal)}
    )
    if result.deleted_count == 0:
        return False
    await WebhookDelivery.get_motor_collection().delete_many({"endpoint_id": endpoint_id})
    return True
