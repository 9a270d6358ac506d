"""LOG_FORMAT=json and request ids: one JSON object a line, naming the video and request."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from clipo_gql import logs
from clipo_gql.settings import Settings
from tests.conftest import Server
from tests.test_cli import final_state, running_dev, upload


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError as error:
            exc_info = (type(error), error, error.__traceback__)
    return logging.LogRecord("clipo_gql.x", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_lines_carry_the_video_and_request_of_their_work():
    formatter = logs.JsonFormatter()
    plain = json.loads(formatter.format(record("took %d s", 3)))
    assert plain["message"] == "took 3 s"
    assert (plain["level"], plain["logger"]) == ("WARNING", "clipo_gql.x")
    assert "video_id" not in plain
    assert "request_id" not in plain
    assert plain["time"].endswith("+00:00")

    video, request = logs.video_id.set("v1"), logs.request_id.set("r1")
    try:
        line = formatter.format(record('said "%s"\nand more', "ünïcode", exc=True))
    finally:
        logs.video_id.reset(video)
        logs.request_id.reset(request)
    assert "\n" not in line, "one object a line, whatever the message holds"
    parsed = json.loads(line)
    assert (parsed["video_id"], parsed["request_id"]) == ("v1", "r1")
    assert parsed["message"] == 'said "ünïcode"\nand more'
    assert "ValueError: boom" in parsed["exception"]


def test_the_uvicorn_config_keeps_redacting_tokens_in_json():
    config = logs.uvicorn_config(Settings(log_format="json"))
    assert {f["()"] for f in config["formatters"].values()} == {logs.JsonFormatter}
    assert config["handlers"]["access"]["filters"] == ["redact_tokens"]
    text = logs.uvicorn_config(Settings())
    assert all(
        "()" not in f or f["()"] is not logs.JsonFormatter for f in text["formatters"].values()
    )


async def test_every_response_names_its_request(server: Server):
    first = await server.http.get("/healthz")
    second = await server.http.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert len(first.headers["x-request-id"]) == 32
    # A proxy's id carries through; one that could forge a log line does not.
    given = await server.http.get("/healthz", headers={"x-request-id": "edge-42.a:b"})
    assert given.headers["x-request-id"] == "edge-42.a:b"
    forged = await server.http.get("/healthz", headers={"x-request-id": 'x" level=ERROR'})
    assert forged.headers["x-request-id"] != 'x" level=ERROR'
    graphql = await server.http.post("/graphql", json={"query": "{ __typename }"})
    assert len(graphql.headers["x-request-id"]) == 32


def test_dev_with_json_logs_writes_only_json_lines(tmp_path: Path, clips: Any):
    with running_dev(tmp_path, LOG_FORMAT="json") as dev:
        video_id = upload(dev.url, clips.h264_aac)
        assert final_state(dev.url, video_id)["status"] == "DONE"
        broken = upload(dev.url, clips.truncated)
        assert final_state(dev.url, broken)["status"] == "FAILED"
    lines = [json.loads(line) for line in (tmp_path / "dev.log").read_text().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access, "the access log is there"
    assert all(len(line.get("request_id", "")) == 32 for line in access)
    # A job's lines name its video.
    failed = [line for line in lines if line.get("video_id") == broken]
    assert any("FAILED" in line["message"] for line in failed), failed
    assert any(line.get("video_id") == video_id for line in lines)
