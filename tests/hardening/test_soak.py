"""Case 18: a soak on loopback: 50 uploads and 200 live subscribers against a running service.

The issue asks for `clipo-gql serve` and two `worker` processes; those share state through
MongoDB, which this machine does not have, so the soak runs `clipo-gql dev` (the same API and
the same worker code, in one process) with WORKER_CONCURRENCY=2. Every video must end DONE,
every subscriber must get its final state, and the process's memory, open files and Redis
subscriptions must come back to where they were.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.clips import Clips
from tests.test_cli import DevServer, running_dev
from tests.wsclient import subscribe

pytestmark = pytest.mark.timeout(240)

UPLOADS = 50
SUBSCRIBERS_PER_VIDEO = 4  # 200 in all
WATCH = "subscription($id: ID!) { videoStatus(id: $id) { id status progress } }"
OPERATIONS = json.dumps(
    {"query": "mutation($f: Upload!) { uploadVideo(file: $f) { id } }", "variables": {"f": None}}
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> list[str]:
    kinds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            kinds.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(kinds)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevServer]:
    # 50 uploads and 200 subscribers from one address: above the per-client defaults.
    with running_dev(
        tmp_path,
        WORKER_CONCURRENCY="2",
        WS_MAX_CONNECTIONS_PER_CLIENT="1000",
        RATE_LIMIT_VIDEOS="1000/minute",
        MAX_ACTIVE_VIDEOS="1000",
    ) as server:
        yield server


async def upload(http: httpx.AsyncClient, clip: bytes, n: int) -> str:
    response = await http.post(
        "/graphql",
        data={"operations": OPERATIONS, "map": '{"0": ["variables.f"]}'},
        files={"0": (f"soak-{n}.mp4", clip, "video/mp4")},
        headers={"apollo-require-preflight": "true"},
    )
    body = response.json()
    assert "errors" not in body, body
    video_id: str = body["data"]["uploadVideo"]["id"]
    return video_id


async def final_status(ws_url: str, video_id: str) -> str:
    last = ""
    async for payload in subscribe(ws_url, WATCH, {"id": video_id}):
        assert not payload.get("errors"), payload
        last = payload["data"]["videoStatus"]["status"]
    return last


async def round_of(url: str, clip: bytes, uploads: int) -> None:
    """Upload `uploads` clips at once, each watched by several subscribers; all must end DONE."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        ids = await asyncio.gather(*(upload(http, clip, n) for n in range(uploads)))
    watchers = [final_status(ws_url, v) for v in ids for _ in range(SUBSCRIBERS_PER_VIDEO)]
    finals = await asyncio.wait_for(asyncio.gather(*watchers), 180)
    assert finals == ["DONE"] * len(watchers)


async def settle(pid: int) -> tuple[int, int]:
    await asyncio.sleep(1.0)  # let closed sockets and finished jobs be released
    return rss_kib(pid), open_fds(pid)


async def test_soak(dev: DevServer, clips: Clips):
    url, proc, prefix = dev.url, dev.proc, dev.prefix
    clip = clips.h264_aac.read_bytes()
    # Warm up with a round of the same size: connection pools grow to the concurrency they
    # see and stay, so only the second round shows whether anything leaks per request.
    await round_of(url, clip, UPLOADS)
    rss_before, fds_before = await settle(proc.pid)

    await round_of(url, clip, UPLOADS)
    rss_after, fds_after = await settle(proc.pid)

    # A leak per request would show as 50 or 200 more; a pool may still open a few.
    assert fds_after <= fds_before + 15, (fds_before, fds_after, fd_kinds(proc.pid))
    assert rss_after - rss_before < 40 * 1024, f"RSS grew {rss_before} -> {rss_after} KiB"
    redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        assert await redis.pubsub_channels(f"{prefix}:video:*") == []
    finally:
        await redis.aclose()
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/readyz")).status_code == 200
        count = await http.post("/graphql", json={"query": "{ videos { totalCount } }"})
        assert count.json()["data"]["videos"]["totalCount"] == 2 * UPLOADS
