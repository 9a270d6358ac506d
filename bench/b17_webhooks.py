"""Benchmarks 17 and 18: webhooks (issue 16).

17. Latency: videos uploaded to a `clipo-gql dev`, each watched over the subscription, with an
    endpoint for `video.ready`. For each video, DONE → subscription event received and DONE →
    webhook received, both from the DONE state's stored `updatedAt` (one clock: the same
    machine). Reported: the webhook's p99 against the subscription's; target p99 ≤ the
    subscription's + 100 ms (as a ratio of the subscription's p99, computed after the run).
18. Throughput: 50 endpoints of one owner and 200 events (resumable uploads created through
    `createUpload`, each a `video.created`: 10,000 deliveries), from the first mutation to the
    last delivery received; against a bare httpx client posting the same signed payloads to
    the same receivers, 50 at a time (the server's WEBHOOK_CONCURRENCY). Target ≥ 0.5×.

The receivers run in a process of their own (`python -m bench.b17_webhooks PORT`), so that
the baseline's client does not share its process with them: plain asyncio HTTP/1.1 with
keep-alive, a 204 for every POST, and `GET /stats` for what arrived.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from bench.common import (
    Context,
    Result,
    Service,
    alternate,
    child_env,
    dev_server,
    ferretdb,
    free_port,
    make_clip,
    upload,
    video_states,
)

ENDPOINTS = 50
# 2,000 deliveries a round. On FerretDB each delivery's writes scan the delivery log, which
# grows by a round's deliveries each time: 200 events (10,000 a round) did not finish a full
# run (a createUpload waited past the client's 120 s once the database fell behind).
EVENTS = 40
CONCURRENCY = 50
CREATE = """mutation($url: String!, $events: [WebhookEventType!]) {
  createWebhookEndpoint(url: $url, events: $events) { secret endpoint { id } } }"""
CREATE_UPLOAD = """mutation($name: String!) {
  createUpload(filename: $name, sizeBytes: 1000000) { video { id } } }"""
WATCH = "subscription($id: ID!) { videoStatus(id: $id) { status updatedAt } }"


# -- the receivers' process ---------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.count = 0  # distinct (endpoint path, webhook-id): a duplicate is not throughput
        self.duplicates = 0
        self.last = 0.0
        self.ready: list[tuple[str, str, float]] = []  # (video id, updatedAt, arrival)
        self.seen: set[tuple[str, bytes]] = set()


async def serve(port: int) -> None:
    stats = Stats()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                length = 0
                event = b""
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        event = value.strip()
                body = await reader.readexactly(length) if length else b""
                if method == "GET":
                    out = json.dumps(
                        {"count": stats.count, "last": stats.last, "ready": stats.ready,
                         "duplicates": stats.duplicates}
                    ).encode()  # fmt: skip
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out)
                    )
                elif (path, event) in stats.seen:
                    stats.duplicates += 1
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                else:
                    stats.seen.add((path, event))
                    stats.count += 1
                    stats.last = time.time()
                    if path == "/ready":
                        video = json.loads(body)["data"]["video"]
                        stats.ready.append((video["id"], video["updatedAt"], stats.last))
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(one, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


@asynccontextmanager
async def receivers(ctx: Context) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.b17_webhooks", str(port), env=child_env(ctx),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    await http.get(f"{url}/stats")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        yield url
    finally:
        proc.kill()
        await proc.wait()


async def stats(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    found: dict[str, Any] = (await http.get(f"{url}/stats")).json()
    return found


async def until_count(http: httpx.AsyncClient, url: str, count: int, seconds: float) -> float:
    """Wait for `count` deliveries in all; the arrival time of the last one."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = await stats(http, url)
        if got["count"] >= count:
            return float(got["last"])
        await asyncio.sleep(0.02)
    raise RuntimeError(f"only {got['count']} of {count} webhooks arrived in {seconds:.0f} s")


def server_env(url: str) -> dict[str, str]:
    port = url.rsplit(":", 1)[1]
    return {"URL_FETCH_ALLOW_PRIVATE": "true", "URL_FETCH_ALLOWED_PORTS": port,
            "HLS_RENDITIONS": "", "STORYBOARD": "false",
            "WEBHOOK_MAX_ENDPOINTS": str(ENDPOINTS)}  # fmt: skip


async def gql(http: httpx.AsyncClient, service: Service, query: str, **variables: Any) -> Any:
    body = (await http.post(f"{service.url}/graphql",
                            json={"query": query, "variables": variables})).json()  # fmt: skip
    if "errors" in body:
        raise RuntimeError(f"{query[:40]}...: {body['errors']}")
    return body["data"]


# -- 17: latency --------------------------------------------------------------------------


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def watch_done(service: Service, video_id: str) -> float:
    """Subscribe; DONE → received, from the DONE state's updatedAt, in ms."""
    async for video in video_states(service, WATCH, video_id):
        if video["status"] == "DONE":
            return (time.time() - stamp(video["updatedAt"])) * 1000
    raise RuntimeError(f"video {video_id} ended without DONE")


def p99(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[98]
        if len(values) > 1
        else values[0]
    )


async def latency_round(
    http: httpx.AsyncClient, service: Service, hooks: str, clip: Path, videos: int
) -> tuple[list[float], list[float]]:
    """(webhook ms, subscription ms) for `videos` videos, two processing at a time."""
    subscribed: list[float] = []
    ids: list[str] = []

    async def one() -> None:
        video_id = await upload(http, service, clip)
        ids.append(video_id)
        subscribed.append(await watch_done(service, video_id))

    for _ in range(videos // 2):
        await asyncio.gather(one(), one())
    for _ in range(200):
        ready = {r[0]: r for r in (await stats(http, hooks))["ready"]}
        if all(i in ready for i in ids):
            break
        await asyncio.sleep(0.05)
    hooked = [(ready[i][2] - stamp(ready[i][1])) * 1000 for i in ids]
    return hooked, subscribed


async def latency(ctx: Context) -> Result:
    videos = 4 if ctx.smoke else 20
    clip = make_clip(ctx.workdir / "hooks-clip.mp4", seconds=2, size="320x240")
    webhook_p99: list[float] = []
    subscription_p99: list[float] = []
    p50s: list[str] = []
    async with receivers(ctx) as hooks, dev_server(ctx, **server_env(hooks)) as service:
        async with httpx.AsyncClient(timeout=120) as http:
            await gql(http, service, CREATE, url=f"{hooks}/ready", events=["VIDEO_READY"])
            await latency_round(http, service, hooks, clip, 2)  # warm-up
            for _ in range(ctx.repeats):
                hooked, subscribed = await latency_round(http, service, hooks, clip, videos)
                webhook_p99.append(p99(hooked))
                subscription_p99.append(p99(subscribed))
                p50s.append(f"{statistics.median(hooked):.0f}/{statistics.median(subscribed):.0f}")
    sub = statistics.median(subscription_p99)
    return Result(
        number=17, name=f"p99 DONE → webhook received, {videos} videos per round", unit="ms",
        ours=webhook_p99, baseline=subscription_p99,
        baseline_name="p99 DONE → subscription event received, same videos",
        higher_is_better=False, target=round((sub + 100) / sub, 2),
        notes=[
            "target: webhook p99 ≤ subscription p99 + 100 ms, as a ratio of this run's "
            f"subscription p99 ({sub:.0f} ms); p50 webhook/subscription per round (ms): "
            + ", ".join(p50s)
        ],
    )  # fmt: skip


# -- 18: throughput -----------------------------------------------------------------------


async def ours_round(http: httpx.AsyncClient, service: Service, hooks: str, events: int,
                     endpoints: int) -> float:  # fmt: skip
    before = (await stats(http, hooks))["count"]
    started = time.time()
    queue = list(range(events))

    async def creator() -> None:
        while queue:
            n = queue.pop()
            await gql(http, service, CREATE_UPLOAD, name=f"e{n}.mp4")

    await asyncio.gather(*(creator() for _ in range(10)))
    last = await until_count(http, hooks, before + events * endpoints, 600)
    return events * endpoints / (last - started)


async def baseline_round(hooks: str, bodies: list[tuple[str, dict[str, str], bytes]]) -> float:
    queue = list(bodies)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()

        async def sender() -> None:
            while queue:
                url, headers, body = queue.pop()
                response = await client.post(url, content=body, headers=headers)
                if not 200 <= response.status_code < 300:
                    raise RuntimeError(f"receiver answered {response.status_code}")

        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        return len(bodies) / (time.perf_counter() - started)


def signed_bodies(hooks: str, secret: str, sample: bytes, events: int, endpoints: int
                  ) -> list[tuple[str, dict[str, str], bytes]]:  # fmt: skip
    webhook = Webhook(secret)
    found = []
    for n in range(events):
        event_id = f"msg_{n:024d}"
        now = datetime.now(UTC)
        signature = webhook.sign(event_id, now, sample.decode())
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        found += [(f"{hooks}/e{e}", headers, sample) for e in range(endpoints)]  # fmt: skip
    return found


async def throughput(ctx: Context) -> Result:
    endpoints = 5 if ctx.smoke else ENDPOINTS
    events = 10 if ctx.smoke else EVENTS
    async with ferretdb(ctx) as mongodb_url, receivers(ctx) as hooks:
        database = {"MONGODB_URL": mongodb_url} if mongodb_url else {}
        async with dev_server(ctx, **server_env(hooks), **database) as service:
            result = await throughput_on(ctx, service, hooks, endpoints, events)
        duplicates = (await stats_of(hooks))["duplicates"]
    result.notes += [
        f"database: {'FerretDB (CLIPO_FERRETDB_BIN)' if mongodb_url else 'the stand-in'}; "
        f"{duplicates} duplicate deliveries received (not counted)"
    ]
    return result


async def stats_of(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        return await stats(http, url)


async def throughput_on(
    ctx: Context, service: Service, hooks: str, endpoints: int, events: int
) -> Result:
    async with httpx.AsyncClient(timeout=120) as http:
        secret = ""
        for e in range(endpoints):
            made = await gql(http, service, CREATE, url=f"{hooks}/e{e}",
                             events=["VIDEO_CREATED"])  # fmt: skip
            secret = made["createWebhookEndpoint"]["secret"]
        # A body as large as ours: a video.created of a fresh upload.
        sample = json.dumps({"type": "video.created", "timestamp": "2026-12-03T00:00:00.000Z",
                             "data": {"video": {"id": "0" * 24, "filename": "e0.mp4",
                                                "status": "UPLOADING", "pad": "x" * 900}}},
                            separators=(",", ":")).encode()  # fmt: skip
        bodies = signed_bodies(hooks, secret, sample, events, endpoints)
        await ours_round(http, service, hooks, 2, endpoints)  # warm-up
        await baseline_round(hooks, bodies[: endpoints * 2])
        ours, baseline = await alternate(
            ctx.repeats,
            lambda: ours_round(http, service, hooks, events, endpoints),
            lambda: baseline_round(hooks, bodies),
        )
    return Result(
        number=18, name=f"{endpoints} endpoints × {events} events, deliveries per second",
        unit="deliveries/s", ours=ours, baseline=baseline,
        baseline_name=f"bare httpx posting the same signed payloads, {CONCURRENCY} at a time",
        higher_is_better=True, target=0.5,
        notes=["ours: from the first createUpload to the last delivery received, in one "
               "`clipo-gql dev` (API, worker and delivery worker in one process)"],
    )  # fmt: skip


async def run(ctx: Context) -> list[Result]:
    results = [await latency(ctx)]
    try:
        results.append(await throughput(ctx))
    except Exception as exc:  # row 17 stands on its own: report it, and why 18 did not run
        traceback.print_exc()
        results[0].notes.append(f"row 18 did not run: {exc!r}"[:400])
    return results


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
