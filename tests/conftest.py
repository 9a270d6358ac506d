from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import uvicorn
from arq.constants import health_check_key_suffix
from redis.asyncio import Redis

from clipo_gql import app as app_module
from clipo_gql.app import create_app
from clipo_gql.settings import Settings
from clipo_gql.ws_protocol import WEBSOCKET_OPTIONS

pytest_plugins = ["tests.clips"]


def database_name() -> str:
    """Which database this run is on (./scripts/test runs the suite once per database)."""
    url = os.environ.get("MONGODB_URL")
    named = os.environ.get("CLIPO_DATABASE_NAME")
    if named:
        return f"{named} ({url})" if url else named
    return f"MONGODB_URL ({url})" if url else "the stand-in"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "once_per_run: does not depend on the database; ./scripts/test runs it in its last pass",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # ./scripts/test sets this for every pass but the last: a test whose outcome does not
    # depend on the database (the benchmarks' smoke run, 100 s) need not run twice.
    if not os.environ.get("CLIPO_REPEATED_PASS"):
        return
    skip = pytest.mark.skip(reason="does not depend on the database: runs in the last pass")
    for item in items:
        if item.get_closest_marker("once_per_run"):
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {database_name()}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    terminalreporter.write_line(f"database: {database_name()}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated per test: own media folder, queue, channels and database."""
    run = uuid.uuid4().hex[:12]
    return Settings(
        media_dir=tmp_path / "media",
        redis_url=os.environ.get("REDIS_URL"),
        queue_name=f"clipo-test:{run}:queue",
        redis_prefix=f"clipo-test:{run}",
        mongodb_database=f"clipo_test_{run}",
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.effective_redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"*{settings.redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@dataclass
class Server:
    url: str
    settings: Settings
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    async def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def upload(self, path: Path, *, filename: str | None = None) -> httpx.Response:
        operations = (
            '{"query": "mutation($file: Upload!) { uploadVideo(file: $file) '
            '{ id status filename sizeBytes } }", "variables": {"file": null}}'
        )
        with path.open("rb") as fh:
            return await self.http.post(
                "/graphql",
                data={"operations": operations, "map": '{"0": ["variables.file"]}'},
                files={"0": (filename or path.name, fh, "video/mp4")},
                headers={"apollo-require-preflight": "true"},
            )


async def run_server(
    settings: Settings, *, embedded: bool = True, worker: bool = True
) -> AsyncIterator[Server]:
    """The app on a loopback port. `embedded` allows the stand-in and, unless `worker` is
    False (for tests that run jobs themselves), runs the in-process worker."""
    patched = (
        mock.patch.object(app_module, "run_embedded_worker", no_worker)
        if embedded and not worker
        else contextlib.nullcontext()
    )
    with patched:
        app = create_app(settings, embedded=embedded)
        # The websocket options of `clipo-gql serve`: fan-out's direct frames (fanout.py) are
        # what the tests see.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
            **WEBSOCKET_OPTIONS,
        )  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.01)
        if embedded and worker:
            await worker_ready(settings, task)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Server(url=url, settings=settings, http=http)
        server.should_exit = True
        await task
        if settings.mongodb_url:
            from motor.motor_asyncio import AsyncIOMotorClient

            client: Any = AsyncIOMotorClient(settings.mongodb_url)
            await client.drop_database(settings.mongodb_database)
            client.close()


async def no_worker(settings: Settings) -> None:
    await asyncio.Event().wait()


async def worker_ready(settings: Settings, serving: asyncio.Task[None]) -> None:
    """Wait for the in-process worker's first poll, which follows its start-up pass: a test
    storing a PENDING video without a job before that would race the pass that queues it."""
    client = Redis.from_url(settings.effective_redis_url)
    try:
        async with asyncio.timeout(60):
            while not await client.exists(settings.queue_name + health_check_key_suffix):
                if serving.done():
                    serving.result()
                    raise RuntimeError("server stopped during start-up")
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()


@pytest.fixture
async def server(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    """The real app on a loopback port, with its in-process worker."""
    async for running in run_server(settings):
        yield running


def incoming_files(settings: Settings) -> list[Path]:
    """Upload bytes in `incoming/` (each API process's own folder and its lock file aside)."""
    return sorted(
        p
        for p in (settings.media_dir / "incoming").rglob("*")
        if p.is_file() and p.suffix != ".lock"
    )


def video_files(settings: Settings) -> list[Path]:
    return sorted(p for p in (settings.media_dir / "videos").rglob("*") if p.is_file())


# A DONE video's files with the default settings, besides its `hls/` folder (the ladder).
DONE_FILES = [
    "metadata.json", "original", "record.json", "storyboard.jpg", "storyboard.vtt",
    "thumbnail.jpg", "video.mp4",
]  # fmt: skip


def output_names(settings: Settings) -> list[str]:
    """The names of every video's files outside their ladders, sorted; each ladder checked
    to have its master playlist."""
    files = video_files(settings)
    for folder in {p.parent for p in files if p.parent.parent.name == "videos"}:
        assert (folder / "hls" / "master.m3u8").is_file(), f"{folder.name} has no ladder"
    return sorted(p.name for p in files if "hls" not in p.relative_to(settings.media_dir).parts)
