"""API keys: `clipo_<key id>_<secret>`, 32 random bytes of secret, shown once.

Only the SHA-256 of the secret is stored (the secret is random and long, so a fast hash is
enough: there is nothing to guess), and it is compared in constant time. A revoked key is
deleted, and every API process looks the key up on each request, so a revocation holds at
once everywhere. `lastUsedAt` is written at most once a minute per key and process, not per
request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from beanie import SortDirection
from bson import ObjectId

from clipo_gql.auth.principal import Principal
from clipo_gql.errors import UnauthenticatedError
from clipo_gql.models import ApiKey, now
from clipo_gql.storage import parse_id

PREFIX = "clipo_"
SECRET_BYTES = 32
LAST_USED_EVERY_SECONDS = 60.0


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


async def create(owner_id: str, label: str, *, admin: bool) -> tuple[str, ApiKey]:
    """The key (to show once) and its stored document."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    document = ApiKey(
        id=ObjectId(), label=label, owner_id=owner_id, admin=admin, secret_sha256=_digest(secret)
    )
    await document.insert()
    return f"{PREFIX}{document.id}_{secret}", document


class ApiKeyVerifier:
    def __init__(self) -> None:
        self._touched: dict[ObjectId, float] = {}

    async def verify(self, credential: str) -> Principal:
        key_id, _, secret = credential.removeprefix(PREFIX).partition("_")
        oid = parse_id(key_id)
        document = await ApiKey.get(oid) if oid is not None and secret else None
        # One answer for unknown, revoked and wrong: which of them it was helps nobody but
        # a guesser. The digest is compared even for an unknown key, for the same timing.
        stored = document.secret_sha256 if document is not None else _digest("")
        if not hmac.compare_digest(_digest(secret), stored) or document is None:
            raise UnauthenticatedError("The API key is not valid (unknown or revoked)")
        await self._touch(document)
        return Principal(owner_id=document.owner_id, admin=document.admin, via="api_key")

    async def _touch(self, document: ApiKey) -> None:
        assert document.id is not None
        last = self._touched.get(document.id)
        moment = time.monotonic()
        if last is not None and moment - last < LAST_USED_EVERY_SECONDS:
            return
        self._touched[document.id] = moment
        if len(self._touched) > 10_000:  # keys seen long ago need no memo
            self._touched.clear()
        await ApiKey.get_motor_collection().update_one(
            {"_id": document.id}, {"$set": {"last_used_at": now()}}
        )


async def list_keys(owner_id: str | None) -> list[ApiKey]:
    """The keys of one owner, or everyone's (None), newest first."""
    query = {} if owner_id is None else {"owner_id": owner_id}
    newest = [("created_at", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)]
    return await ApiKey.find(query).sort(newest).to_list()


async def revoke(key_id: ObjectId, owner_id: str | None) -> bool:
    """Delete the key if it is the owner's (any key for None: an admin); False otherwise."""
    query: dict[str, object] = {"_id": key_id}
    if owner_id is not None:
        query["owner_id"] = owner_id
    result = await ApiKey.get_motor_collection().delete_one(query)
    return bool(result.deleted_count)
