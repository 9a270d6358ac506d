"""A minimal GraphQL-over-websocket client for both subprotocols, on the `websockets` library."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.typing import Subprotocol

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


async def subscribe(
    url: str,
    query: str,
    variables: dict[str, Any],
    *,
    protocol: str = TRANSPORT_WS,
    origin: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield each result payload (`{"data": ..., "errors": ...}`) until the server completes."""
    headers = {"Origin": origin} if origin else None
    async with websockets.connect(
        url,
        subprotocols=[Subprotocol(protocol)],
        additional_headers=headers,
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        while True:
            ack = json.loads(await ws.recv())
            if ack["type"] == "connection_ack":
                break
        start = "subscribe" if protocol == TRANSPORT_WS else "start"
        payload = {"query": query, "variables": variables}
        await ws.send(json.dumps({"id": "1", "type": start, "payload": payload}))
        while True:
            message = json.loads(await ws.recv())
            kind = message["type"]
            if kind in ("next", "data"):
                yield message["payload"]
            elif kind == "error":
                payload = message["payload"]
                yield {"errors": payload if isinstance(payload, list) else [payload]}
                return
            elif kind == "complete":
                return
            # "ka" keep-alives and pings are ignored
