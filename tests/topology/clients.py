"""What a client of the topology does: upload over HTTP, watch over a websocket that reconnects
(as graphql-ws clients do when their socket drops), read the database directly to check."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from motor.motor_asyncio import AsyncIOMotorClient
from websockets.typing import Subprotocol

from tests.wsclient import LEGACY_WS, TRANSPORT_WS

UPLOAD = (
    '{"query": "mutation($file: Upload!) { uploadVideo(file: $file) { id status } }", '
    '"variables": {"file": null}}'
)
WATCH = "subscription($id: ID!) { videoStatus(id: $id) { id status progress error } }"
FINAL = ("DONE", "FAILED")
# A DONE video's folder (compose keeps the default ladder and storyboard).
OUTPUTS = [
    "hls", "metadata.json", "original", "record.json", "storyboard.jpg", "storyboard.vtt",
    "thumbnail.jpg", "video.mp4",
]  # fmt: skip


async def upload(http: httpx.AsyncClient, path: Path | bytes, name: str) -> dict[str, Any]:
    """The whole GraphQL answer to an upload (data or errors)."""
    content = path.read_bytes() if isinstance(path, Path) else path  # noqa: ASYNC240 - small
    response = await http.post(
        "/graphql",
        data={"operations": UPLOAD, "map": '{"0": ["variables.file"]}'},
        files={"0": (name, content, "video/mp4")},
        headers={"apollo-require-preflight": "true"},
    )
    body: dict[str, Any] = response.json()
    return body


async def upload_id(http: httpx.AsyncClient, path: Path | bytes, name: str) -> str:
    body = await upload(http, path, name)
    assert "errors" not in body, body
    video_id: str = body["data"]["uploadVideo"]["id"]
    return video_id


async def gql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Watcher:
    """One subscriber of one video, reconnecting until it has seen a final state."""

    url: str
    video_id: str
    protocol: str = TRANSPORT_WS
    authorization: str | None = None  # sent in connection_init, as graphql-ws clients do
    states: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any] | None:
        return self.states[-1] if self.states and self.states[-1]["status"] in FINAL else None

    @property
    def final_status(self) -> str | None:
        return None if self.final is None else str(self.final["status"])

    async def run(self, deadline_seconds: float = 120) -> None:
        deadline = time.monotonic() + deadline_seconds
        delay = 0.2
        while self.final is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.video_id}: no final state; saw {self.states}")
            try:
                if await self._once():
                    return
                delay = 0.2
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as exc:
                self.errors.append(repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _once(self) -> bool:
        """One connection: True once the server completed after a final state."""
        async with websockets.connect(
            self.url, subprotocols=[Subprotocol(self.protocol)], open_timeout=5
        ) as ws:
            self.connections += 1
            payload = {"authorization": self.authorization} if self.authorization else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] == "connection_ack":
                    break
                if reply["type"] == "connection_error":
                    self.errors.append(json.dumps(reply.get("payload")))
                    return False
            start = "subscribe" if self.protocol == TRANSPORT_WS else "start"
            operation = {"query": WATCH, "variables": {"id": self.video_id}}
            await ws.send(json.dumps({"id": "1", "type": start, "payload": operation}))
            while True:
                message = json.loads(await ws.recv())
                kind = message["type"]
                if kind in ("next", "data"):
                    result = message["payload"]
                    if result.get("errors"):
                        # e.g. the database is down: a client tries again later.
                        self.errors.append(result["errors"][0]["message"])
                        return False
                    self.states.append(result["data"]["videoStatus"])
                elif kind == "error":
                    self.errors.append(json.dumps(message["payload"]))
                    return False
                elif kind == "complete":
                    return self.final is not None


def protocol_for(i: int) -> str:
    return TRANSPORT_WS if i % 2 == 0 else LEGACY_WS


def database(url: str, name: str) -> Any:
    client: Any = AsyncIOMotorClient(url, tz_aware=True, serverSelectionTimeoutMS=5000)
    return client, client[name]["videos"]
