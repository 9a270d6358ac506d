"""auth/tokens.py with a JWKS URL: served by a real HTTP server on loopback, keys rotated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from clipo_gql.auth import tokens
from clipo_gql.auth.tokens import JwtVerifier
from clipo_gql.errors import UnauthenticatedError
from clipo_gql.settings import Settings


class Jwks:
    """A JWKS document that can change, and how often it was fetched."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0


@pytest.fixture
def jwks() -> Iterator[tuple[Jwks, str]]:
    document = Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document.fetches += 1
            body = json.dumps({"keys": document.keys}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield document, f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


def public_jwk(key: Any, kid: str, algorithm: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


def signed(key: Any, kid: str, algorithm: str, **claims: Any) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


async def test_a_jwks_key_verifies_and_a_rotation_is_fetched_once(
    jwks: tuple[Jwks, str], monkeypatch: pytest.MonkeyPatch
):
    document, url = jwks
    first = ec.generate_private_key(ec.SECP256R1())
    document.keys = [public_jwk(first, "k1", "ES256")]
    verifier = JwtVerifier(Settings(auth_mode="required", auth_jwks_url=url))

    assert (await verifier.verify(signed(first, "k1", "ES256"))).owner_id == "alice"
    assert (await verifier.verify(signed(first, "k1", "ES256", sub="bob"))).owner_id == "bob"
    assert document.fetches == 1  # kept, not fetched per token

    # Rotation: a token with a new kid makes one fetch, then verifies.
    monkeypatch.setattr(tokens, "JWKS_MIN_REFRESH_SECONDS", 0.0)
    second = ed25519.Ed25519PrivateKey.generate()
    document.keys.append(public_jwk(second, "k2", "EdDSA"))
    assert (await verifier.verify(signed(second, "k2", "EdDSA"))).owner_id == "alice"
    assert document.fetches == 2

    # Made-up kids cannot make us hammer the provider: one fetch per interval at most.
    monkeypatch.setattr(tokens, "JWKS_MIN_REFRESH_SECONDS", 3600.0)
    for n in range(5):
        with pytest.raises(UnauthenticatedError, match="signing key is unknown"):
            await verifier.verify(signed(first, f"made-up-{n}", "ES256"))
    assert document.fetches == 2

    # A JWKS key verifies only its own algorithm: HS256 with the key's kid is refused.
    forged = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 600}, "s" * 32, headers={"kid": "k1"}
    )
    with pytest.raises(UnauthenticatedError, match="not valid"):
        await verifier.verify(forged)


async def test_symmetric_keys_in_a_jwks_are_ignored(jwks: tuple[Jwks, str]):
    document, url = jwks
    document.keys = [
        {
            "kty": "oct",
            "k": "c3NzcnJyc3NzcnJyc3NzcnJyc3NzcnJyc3NzcnJy",
            "kid": "shared",
            "alg": "HS256",
        }
    ]
    verifier = JwtVerifier(Settings(auth_mode="required", auth_jwks_url=url))
    token = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 600}, "s" * 32, headers={"kid": "shared"}
    )
    with pytest.raises(UnauthenticatedError, match="signing key is unknown"):
        await verifier.verify(token)
