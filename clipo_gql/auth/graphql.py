"""The GraphQL side of access control: `me`, `apiKeys`, `createApiKey`, `revokeApiKey`."""

from __future__ import annotations

from datetime import datetime

import strawberry

from clipo_gql.auth import apikeys
from clipo_gql.errors import BadUserInputError, ForbiddenError
from clipo_gql.models import ApiKey as ApiKeyDocument
from clipo_gql.state import Context
from clipo_gql.storage import parse_id

Info = strawberry.Info[Context, None]
MAX_LABEL = 100


@strawberry.type(name="Principal", description="Who the caller is.")
class PrincipalType:
    owner_id: str
    admin: bool


@strawberry.type(description="An API key; the key itself is shown only when it is made.")
class ApiKey:
    id: strawberry.ID
    label: str
    owner_id: str
    admin: bool
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def from_document(cls, doc: ApiKeyDocument) -> ApiKey:
        return cls(
            id=strawberry.ID(str(doc.id)),
            label=doc.label,
            owner_id=doc.owner_id,
            admin=doc.admin,
            created_at=doc.created_at,
            last_used_at=doc.last_used_at,
        )


@strawberry.type
class ApiKeyCreated:
    key: str = strawberry.field(description="Send as `Authorization: Bearer <key>`; shown once.")
    api_key: ApiKey


@strawberry.type
class AuthQuery:
    @strawberry.field(description="Who the caller is.")
    def me(self, info: Info) -> PrincipalType:
        principal = info.context.principal
        return PrincipalType(owner_id=principal.owner_id, admin=principal.admin)

    @strawberry.field(description="The caller's API keys (admins: everyone's), newest first.")
    async def api_keys(self, info: Info) -> list[ApiKey]:
        principal = info.context.principal
        documents = await apikeys.list_keys(None if principal.admin else principal.owner_id)
        return [ApiKey.from_document(d) for d in documents]


@strawberry.type
class AuthMutation:
    @strawberry.mutation(
        description="Make an API key that acts as the caller; admin keys only by admins."
    )
    async def create_api_key(
        self, info: Info, label: str, admin: bool | None = False
    ) -> ApiKeyCreated:
        principal = info.context.principal
        admin = bool(admin)
        label = label.strip()
        if not label or len(label) > MAX_LABEL or not label.isprintable():
            raise BadUserInputError(f"`label` must be 1 to {MAX_LABEL} printable characters")
        if admin and not principal.admin:
            raise ForbiddenError("Only admins may make admin API keys")
        key, document = await apikeys.create(principal.owner_id, label, admin=admin)
        return ApiKeyCreated(key=key, api_key=ApiKey.from_document(document))

    @strawberry.mutation(
        description="Revoke one of the caller's keys (admins: any); false if none."
    )
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> bool:
        principal = info.context.principal
        key_id = parse_id(str(id))
        if key_id is None:
            return False
        return await apikeys.revoke(key_id, None if principal.admin else principal.owner_id)
