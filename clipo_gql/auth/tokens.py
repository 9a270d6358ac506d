"""Bearer JWTs (RFC 7519), verified with PyJWT against the one configured kind of key.

The algorithms a token may use follow from the key, never from the token: an HS256 secret
accepts HS256 only; a PEM public key accepts its own family (RS256 for RSA, ES256/384/512 by
curve, EdDSA for Ed25519); a JWKS key accepts the algorithm of that JWK. So `alg: none`, and
HS256 "signed" with a public key (the algorithm-confusion class of CVE-2022-29217), never
verify. `exp` and `sub` are required (30 s leeway for clock skew); `iss` and `aud` are
checked when configured.

A JWKS document is fetched at the first token, kept, and fetched again only for a `kid` it
does not hold (a key rotation), at most once per `JWKS_MIN_REFRESH_SECONDS`: tokens with
made-up `kid`s cannot make us hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from clipo_gql.auth.principal import Principal
from clipo_gql.errors import UnauthenticatedError
from clipo_gql.settings import Settings

log = logging.getLogger(__name__)

LEEWAY_SECONDS = 30
JWKS_MIN_REFRESH_SECONDS = 30.0
JWKS_TIMEOUT_SECONDS = 5.0
REQUIRED_CLAIMS = ["exp", "sub"]
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def public_key_algorithms(pem: str) -> tuple[Any, list[str]]:
    """The key and the one algorithm family it verifies."""
    key = load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256", "RS384", "RS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"unsupported curve {key.curve.name}")
        return key, [algorithm]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, ["EdDSA"]
    raise ValueError(f"unsupported public key type {type(key).__name__}")


class JwksKeys:
    """The keys of a JWKS URL, by `kid`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and time.monotonic() - self._fetched_at >= JWKS_MIN_REFRESH_SECONDS:
                await self._fetch()
                key = self._keys.get(kid)
        if key is None:
            raise UnauthenticatedError("The token's signing key is unknown")
        return key

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_SECONDS) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("could not fetch the JWKS at %s: %r", self.url, exc)
            return
        keys: dict[str | None, jwt.PyJWK] = {}
        for data in document.get("keys", []) if isinstance(document, dict) else []:
            try:
                key = jwt.PyJWK.from_dict(data)
            except jwt.PyJWTError as exc:
                log.info("skipping a JWK we cannot use: %s", exc)
                continue
            if key.key_type == "oct":
                continue  # a symmetric key in a public document verifies nothing
            keys[key.key_id] = key
        self._keys = keys


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.auth_jwt_issuer
        self.audience = settings.auth_jwt_audience
        self.admin_role = settings.auth_admin_role
        self._key: Any = None
        self._algorithms: Sequence[str] = ()
        self._jwks: JwksKeys | None = None
        if settings.auth_jwt_secret is not None:
            self._key, self._algorithms = settings.auth_jwt_secret.get_secret_value(), ["HS256"]
        elif settings.auth_jwt_public_key:
            self._key, self._algorithms = public_key_algorithms(settings.auth_jwt_public_key)
        elif settings.auth_jwks_url:
            self._jwks = JwksKeys(settings.auth_jwks_url)

    @property
    def configured(self) -> bool:
        return self._key is not None or self._jwks is not None

    async def verify(self, token: str) -> Principal:
        if not self.configured:
            raise UnauthenticatedError("This server accepts API keys only")
        try:
            key, algorithms = self._key, self._algorithms
            if self._jwks is not None:
                header = jwt.get_unverified_header(token)
                jwk = await self._jwks.key_for(header.get("kid"))
                key, algorithms = jwk.key, [jwk.algorithm_name]
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("The token has expired") from None
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(f"The token is not valid ({_reason(exc)})") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise UnauthenticatedError("The token is not valid (no subject)")
        return Principal(
            owner_id=subject,
            admin=self._is_admin(claims),
            expires_at=float(claims["exp"]),
            via="jwt",
        )

    def _is_admin(self, claims: dict[str, Any]) -> bool:
        roles = claims.get("roles")
        if isinstance(roles, list) and self.admin_role in roles:
            return True
        scope = claims.get("scope")
        return isinstance(scope, str) and self.admin_role in scope.split()


def _reason(exc: jwt.PyJWTError) -> str:
    # PyJWT's messages name the failed check, not the key or the token.
    return str(exc).rstrip(".") or type(exc).__name__


def mint(settings: Settings, subject: str, *, admin: bool = False, ttl_seconds: int = 3600) -> str:
    """An HS256 JWT signed with AUTH_JWT_SECRET (`clipo-gql token`, `dev --auth`, tests)."""
    if settings.auth_jwt_secret is None:
        raise ValueError("AUTH_JWT_SECRET is not set")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["roles"] = [settings.auth_admin_role]
    if settings.auth_jwt_issuer:
        claims["iss"] = settings.auth_jwt_issuer
    if settings.auth_jwt_audience:
        claims["aud"] = settings.auth_jwt_audience
    return jwt.encode(claims, settings.auth_jwt_secret.get_secret_value(), algorithm="HS256")
