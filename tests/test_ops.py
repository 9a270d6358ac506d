"""Operations: `/metrics` (the API's and a worker process's own) and the job monitor
(`queue`), against real servers, Redis, ffmpeg and a real worker process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from bson import ObjectId, json_util
from graphql import GraphQLError
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from pymongo.errors import ConnectionFailure
from redis.asyncio import Redis

from clipo_gql.auth.tokens import mint
from clipo_gql.connections import ConfigError, create_redis
from clipo_gql.errors import CODES, ForbiddenError, NotFoundError, RateLimitedError
from clipo_gql.graphql_errors import with_code
from clipo_gql.models import Video
from clipo_gql.ops.exporter import WorkerMetrics
from clipo_gql.ops.monitor import Heartbeat, queue_status
from clipo_gql.settings import Settings
from clipo_gql.tasks import enqueue_processing
from tests.clips import Clips
from tests.conftest import Server, run_server
from tests.hardening.test_access import auth_settings
from tests.hardening.test_crash_recovery import (
    place_original,
    spawn_worker,
    stored_video,
    worker_log,
)
from tests.wsclient import subscribe

pytestmark = pytest.mark.timeout(120)

QUEUE = (
    "{ queue { queued running workers { id host pid startedAt lastSeenAt runningVideoIds"
    " jobsDone jobsFailed } } }"
)
WATCH = "subscription($id: ID!) { videoStatus(id: $id) { status } }"
STATUS = "query($id: ID!) { video(id: $id) { status error } }"
METRICS_TOKEN = "scrape-" + "t" * 32


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (name, labels), through the official parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(
    http: httpx.AsyncClient, url: str = "/metrics", **headers: str
) -> dict[Any, float]:
    response = await http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


async def until_final(api: Server, video_id: str, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = await api.gql(STATUS, id=video_id)
        status: str = body["data"]["video"]["status"]
        if status in ("DONE", "FAILED"):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"video {video_id} never ended")


async def test_metrics_count_what_a_video_goes_through(server: Server, clips: Clips) -> None:
    before = await scrape(server.http)
    uploaded = (await server.upload(clips.h264_aac)).json()["data"]["uploadVideo"]
    assert await until_final(server, uploaded["id"]) == "DONE"
    refused = await server.gql("{ video(id: 1) { id } }")
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    await server.http.get(f"/stream/{ObjectId()}")  # a route with an id in it
    after = await scrape(server.http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    size = clips.h264_aac.stat().st_size
    assert grew("clipo_videos_created_total", source="upload") == 1
    assert grew("clipo_upload_bytes_total") == size
    assert grew("clipo_jobs_total", outcome="done") == 1
    assert grew("clipo_job_duration_seconds_count", outcome="done") == 1
    assert grew("clipo_job_duration_seconds_sum", outcome="done") > 0
    for phase in ("probe", "thumbnail", "mp4"):
        assert grew("clipo_job_phase_seconds_count", phase=phase) == 1, phase
    assert grew("clipo_ffmpeg_cpu_seconds_total", mode="user") > 0
    assert grew("clipo_graphql_operations_total", type="mutation", code="OK") == 1
    assert grew("clipo_graphql_operations_total", type="query", code="BAD_USER_INPUT") == 1
    assert grew("clipo_http_requests_total", route="/graphql", method="POST", status="200") >= 2
    # The route's template, never the id: labels stay bounded whatever clients ask for.
    stream_routes = {labels for name, labels in after if name == "clipo_http_requests_total"}
    assert all(not re.search("[0-9a-f]{24}", v) for labels in stream_routes for _, v in labels)
    assert ("route", "/stream/{id}") in {item for labels in stream_routes for item in labels}
    assert value(after, "clipo_queue_depth") == 0
    assert value(after, "clipo_workers") == 1
    for family in ("clipo_websocket_connections", "clipo_subscriptions"):
        assert (family, frozenset()) in after, family


async def test_metrics_count_websockets_subscriptions_and_messages(
    server: Server, clips: Clips
) -> None:
    uploaded = (await server.upload(clips.h264_aac)).json()["data"]["uploadVideo"]
    before = await scrape(server.http)
    sockets = value(before, "clipo_websocket_connections")
    during: dict[Any, float] = {}
    async for _ in subscribe(server.ws_url, WATCH, {"id": uploaded["id"]}):
        if not during:
            during = await scrape(server.http)
    assert value(during, "clipo_websocket_connections") == sockets + 1
    assert value(during, "clipo_subscriptions") >= 1
    after = await scrape(server.http)
    deadline = time.monotonic() + 10
    while value(after, "clipo_websocket_connections") != sockets:
        assert time.monotonic() < deadline, "the closed websocket is still counted"
        await asyncio.sleep(0.05)
        after = await scrape(server.http)
    assert value(after, "clipo_subscriptions") == value(before, "clipo_subscriptions")
    sent = value(after, "clipo_websocket_messages_sent_total")
    # connection_ack, at least PENDING..DONE as `next`, and `complete`.
    assert sent >= value(before, "clipo_websocket_messages_sent_total") + 4
    assert value(after, "clipo_graphql_operations_total", type="subscription", code="OK") >= 1


@pytest.fixture
async def secured(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    guarded = auth_settings(settings, metrics_token=SecretStr(METRICS_TOKEN))
    async for running in run_server(guarded):
        yield running


async def test_metrics_and_queue_need_an_admin_or_the_metrics_token(secured: Server) -> None:
    user = mint(secured.settings, "alice")
    admin = mint(secured.settings, "root", admin=True)
    assert (await secured.http.get("/metrics")).status_code == 401
    refused = await secured.http.get("/metrics", headers={"authorization": f"Bearer {user}"})
    assert refused.status_code == 403
    assert "METRICS_TOKEN" in refused.json()["errors"][0]["message"]
    wrong = await secured.http.get("/metrics", headers={"authorization": "Bearer scrape-wrong"})
    assert wrong.status_code == 401
    await scrape(secured.http, authorization=f"Bearer {METRICS_TOKEN}")
    await scrape(secured.http, authorization=f"Bearer {admin}")

    async def queue(token: str) -> dict[str, Any]:
        response = await secured.http.post(
            "/graphql", json={"query": QUEUE}, headers={"authorization": f"Bearer {token}"}
        )
        body: dict[str, Any] = response.json()
        return body

    assert (await queue(user))["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    status = (await queue(admin))["data"]["queue"]
    assert [w["pid"] for w in status["workers"]] == [os.getpid()]


async def test_the_queue_shows_each_worker_and_what_it_runs(
    settings: Settings, redis: Redis, clips: Clips
) -> None:
    """A real worker process (SIGKILLed at the end) next to an API without a worker."""
    settings = settings.model_copy(update={"worker_heartbeat_seconds": 0.5})
    port = free_port()
    async for api in run_server(settings, worker=False):
        assert (await api.gql(QUEUE))["data"]["queue"] == {"queued": 0, "running": 0, "workers": []}
        video = await stored_video(settings, clips.h264_aac)
        place_original(settings, ObjectId(), clips.h264_aac)  # no document: never queued
        arq = await create_redis(settings)
        try:
            await enqueue_processing(arq, video.id)  # type: ignore[arg-type]
            queued = (await api.gql(QUEUE))["data"]["queue"]
            assert queued["queued"] == 1
            assert queued["workers"] == []
            worker = await start_worker_with_metrics(settings, video, port)
            try:
                seen = await wait_for_worker(api, worker, settings)
                assert seen["host"] == socket.gethostname()
                assert seen["pid"] == worker.pid
                assert set(seen["runningVideoIds"]) <= {str(video.id)}
                # (On the stand-in the worker process has a database of its own: what both
                # sides see is Redis, so the test follows the job there.)
                done = await wait_for_worker(api, worker, settings, jobs_done=1)
                assert done["runningVideoIds"] == []
                assert done["jobsFailed"] == 0
                async with httpx.AsyncClient() as http:
                    own = await scrape(http, f"http://127.0.0.1:{port}/metrics")
                assert value(own, "clipo_jobs_total", outcome="done") == 1
                assert value(own, "clipo_job_phase_seconds_count", phase="mp4") == 1
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                # Three missed beats, and it is gone.
                await asyncio.sleep(0.5 * 3 + 0.5)
                assert (await api.gql(QUEUE))["data"]["queue"]["workers"] == []
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(10)
        finally:
            await arq.aclose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def start_worker_with_metrics(
    settings: Settings, video: Any, port: int
) -> subprocess.Popen[bytes]:
    document = await Video.get_motor_collection().find_one({"_id": video.id})
    return spawn_worker(
        settings,
        json_util.dumps(document),
        WORKER_METRICS_PORT=str(port),
        WORKER_METRICS_HOST="127.0.0.1",
        WORKER_HEARTBEAT_SECONDS=str(settings.worker_heartbeat_seconds),
    )


async def wait_for_worker(
    api: Server, worker: subprocess.Popen[bytes], settings: Settings, *, jobs_done: int = 0
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker_log(settings)
        workers = (await api.gql(QUEUE))["data"]["queue"]["workers"]
        mine = [w for w in workers if w["pid"] == worker.pid]
        if mine and mine[0]["jobsDone"] >= jobs_done:
            return dict(mine[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"worker never seen with {jobs_done} jobs done: {worker_log(settings)}")


async def test_a_stopped_worker_leaves_the_monitor_at_once(
    settings: Settings, redis: Redis
) -> None:
    heartbeat = Heartbeat(settings, redis)
    heartbeat.start()
    try:
        deadline = time.monotonic() + 10
        while not (await queue_status(redis, settings)).workers:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        with heartbeat.job("65a000000000000000000001") as job:
            await heartbeat.beat()
            status = await queue_status(redis, settings)
            assert status.workers[0].running_video_ids == ["65a000000000000000000001"]
            assert status.running == 1
            job.outcome = None  # deleted while it ran: counted neither way
    finally:
        await heartbeat.stop()
    status = await queue_status(redis, settings)
    assert status.workers == []
    assert status.running == 0
    assert heartbeat.done == heartbeat.failed == 0


async def test_a_worker_metrics_port_in_use_is_a_clear_error(
    settings: Settings, redis: Redis
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = WorkerMetrics(
            settings.model_copy(
                update={"worker_metrics_port": port, "worker_metrics_host": "127.0.0.1"}
            ),
            redis,
        )
        with pytest.raises(
            ConfigError, match=f"WORKER_METRICS_PORT: cannot listen on 127.0.0.1:{port}"
        ):
            metrics.start()


async def test_metrics_off_serves_no_metrics(settings: Settings, redis: Redis) -> None:
    async for api in run_server(settings.model_copy(update={"metrics_enabled": False})):
        assert (await api.http.get("/metrics")).status_code == 404
        assert "data" in await api.gql("{ queue { queued } }")


def test_error_codes_are_the_bounded_set_clients_see() -> None:
    assert {"INTERNAL", "BAD_USER_INPUT", "RATE_LIMITED", "FORBIDDEN", "NOT_FOUND"} <= CODES
    # Whatever a resolver raises, the code clients (and the metric's label) get is in CODES.
    originals: list[Exception | None] = [
        None,
        GraphQLError("Variable $id got invalid value"),
        ConnectionFailure("down"),
        KeyError("a bug"),
        RateLimitedError("slow down", retry_after=3),
        NotFoundError("no such video"),
        ForbiddenError("not yours"),
    ]
    for original in originals:
        error = GraphQLError("raised", original_error=original)
        code = (with_code(error).extensions or {})["code"]
        assert code in CODES, (original, code)
