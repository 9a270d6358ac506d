"""Who may touch which video: the one rule, called by every query, mutation, subscription and
media route (OWASP API1, broken object-level authorization).

An owner sees and changes their own videos; an admin, everyone's. Another owner's video is
answered exactly like an id that does not exist: the same lookup (one query with the owner in
its filter), the same answer, so ids cannot be probed.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from clipo_gql.auth.principal import Principal
from clipo_gql.errors import ForbiddenError
from clipo_gql.models import Video


def scope(principal: Principal) -> dict[str, Any]:
    """The filter that limits a query on videos to what the principal may see."""
    return {} if principal.admin else {"owner_id": principal.owner_id}


def listing_scope(principal: Principal, owner: str | None) -> dict[str, Any]:
    """`videos(owner:)`: admins may name anyone; others only themselves (else FORBIDDEN)."""
    if owner is None:
        return scope(principal)
    if not principal.admin and owner != principal.owner_id:
        raise ForbiddenError("Only admins may list another owner's videos")
    return {"owner_id": owner}


def may_see(principal: Principal, owner_id: str) -> bool:
    return principal.admin or owner_id == principal.owner_id


async def find_video(principal: Principal, video_id: ObjectId) -> Video | None:
    """The video if it exists and the principal may see it; None either way otherwise."""
    raw = await Video.get_motor_collection().find_one({"_id": video_id, **scope(principal)})
    return None if raw is None else Video.from_mongo(raw)
