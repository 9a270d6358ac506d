"""Access control: who the caller is, which videos they may touch, and how much they may ask.

- `principal.py`  the caller as every check sees it (owner id, admin, until when)
- `tokens.py`     bearer JWTs: HS256 secret, PEM public key or JWKS, algorithms pinned to the key
- `apikeys.py`    API keys: made, shown once, stored hashed, revoked
- `credentials.py` an `Authorization` header (or websocket payload) to a principal
- `ownership.py`  the one ownership rule every query, mutation, subscription and route calls
- `media_links.py` signed, expiring media URLs
- `quotas.py`     limits per owner (rate, unfinished videos, bytes), the free-disk guard, and
                  websocket connections per client
- `graphql.py`    `me`, `apiKeys`, `createApiKey`, `revokeApiKey`
"""
