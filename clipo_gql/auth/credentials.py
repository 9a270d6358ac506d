"""From an `Authorization` value (a header, or the websocket's `connection_init` payload) to
the principal every check uses. The one place that decides whether a caller is let in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clipo_gql.auth.apikeys import ApiKeyVerifier, looks_like_key
from clipo_gql.auth.principal import ANONYMOUS, Principal
from clipo_gql.auth.tokens import JwtVerifier
from clipo_gql.connections import ConfigError
from clipo_gql.errors import UnauthenticatedError
from clipo_gql.settings import Settings

MAX_CREDENTIAL_LENGTH = 8192


def check_config(settings: Settings) -> None:
    """Refuse to run with AUTH_MODE=required and nothing to verify or sign with."""
    if not settings.auth_required:
        return
    if not JwtVerifier(settings).configured:
        raise ConfigError(
            "AUTH_MODE=required needs a way to verify tokens: set AUTH_JWT_SECRET, "
            "AUTH_JWT_PUBLIC_KEY or AUTH_JWKS_URL (or AUTH_MODE=off for development)"
        )
    if settings.media_url_secret is None:
        raise ConfigError(
            "AUTH_MODE=required needs MEDIA_URL_SECRET to sign media URLs "
            "(a long random string, the same for every API and worker process)"
        )


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.required = settings.auth_required
        self.jwt = JwtVerifier(settings)
        self.api_keys = ApiKeyVerifier()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller; UnauthenticatedError when auth is required and this does not verify.

        With AUTH_MODE=off every caller is `anonymous`, credential or not.
        """
        if not self.required:
            return ANONYMOUS
        if not authorization:
            raise UnauthenticatedError(
                "Authentication required: send `Authorization: Bearer <token or API key>`"
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise UnauthenticatedError("Send the credential as `Authorization: Bearer <...>`")
        if len(credential) > MAX_CREDENTIAL_LENGTH:
            raise UnauthenticatedError("The credential is too long")
        if looks_like_key(credential):
            return await self.api_keys.verify(credential)
        return await self.jwt.verify(credential)


def from_connection_params(params: Mapping[str, Any] | None, header: str | None) -> str | None:
    """The websocket's credential: `connection_init` payload first, then the upgrade header."""
    if params:
        for name in ("authorization", "Authorization"):
            value = params.get(name)
            if isinstance(value, str) and value:
                return value
    return header
