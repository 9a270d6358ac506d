"""MongoDB unreachable: /readyz names it, an upload fails cleanly keeping nothing, and other
operations say that the database is down.

The stand-in cannot be stopped like a server, so the failure is injected where the driver
would raise it (ServerSelectionTimeoutError, what motor raises when no server answers).
Redis down is covered in tests/test_graphql.py and test_redis_restart.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from clipo_gql.models import Video
from tests.clips import Clips
from tests.conftest import Server, incoming_files, video_files


def unreachable(*args: Any, **kwargs: Any) -> Any:
    raise ServerSelectionTimeoutError("No servers found yet")


async def test_readyz_names_mongodb_when_it_is_down(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("clipo_gql.routes.ping_mongo", unreachable)
    response = await server.http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "down": ["mongodb"]}
    assert (await server.http.get("/healthz")).status_code == 200


async def test_upload_while_mongodb_is_down_keeps_nothing(
    server: Server, clips: Clips, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(Video, "insert", unreachable)
    response = await server.upload(clips.h264_aac)
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL"
    assert "try again" in error["message"], error
    monkeypatch.undo()
    assert await Video.find_all().count() == 0
    assert incoming_files(server.settings) == []
    assert video_files(server.settings) == []


async def test_queries_and_routes_say_the_database_is_down(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    video_id = "6b0269d6ac40a7b6d6c5976d"
    monkeypatch.setattr(Video, "get", unreachable)
    monkeypatch.setattr("clipo_gql.done_videos.Video.get_motor_collection", unreachable)
    body = await server.gql("query($id: ID!) { video(id: $id) { id } }", id=video_id)
    error = body["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL"
    assert error["message"] == "The database is unavailable right now; try again shortly"
    response = await server.http.get(f"/stream/{video_id}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "try again" in response.json()["error"]
