"""Benchmark 6: one status change fanned out to 1,000 and to 2,000 websocket subscribers of one
video (rows 6a and 6b, each on a fresh server),
against a bare redis-py pub/sub subscriber receiving the same messages.

The video must stay unfinished for the whole run (a subscription completes at DONE), so it
is submitted by URL to a local server that sends response headers and then nothing: the
worker sits in the download, and the video stays PROCESSING. The events are then published
by this process, in the format the worker publishes (the video's JSON, captured from the
worker's own first event), on the video's channel; each carries a sequence number in
`progress` and a `version` above anything the worker wrote, so the API forwards every one.

The subscribers run in a child process of their own (`clients`), away from the server's
loop and from the publisher; the baseline subscriber runs there too, in rounds of its own on
another channel, so the API never sees the baseline's events. Latency is the time from just
before PUBLISH to a client's receipt, on the one machine clock (`time.time()`). When the
server falls behind, a subscriber skips to the newest queued state (`videos._newest`): an
event it never saw counts as delivered by the first newer one it received.

    python -m bench.b6_fanout clients WS_URL VIDEO_ID COUNT REDIS_URL BASELINE_CHANNEL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.common import Context, Result, alternate, child_env, dev_server, rss_kib

SUBMIT = "mutation($url: String!) { submitVideo(url: $url) { id status } }"
DELETE = "mutation($id: ID!) { deleteVideo(id: $id) }"
WATCH = "subscription($id: ID!) { videoStatus(id: $id) { status progress } }"
# Far above the versions the worker stores (a handful), so the API forwards every event.
VERSION_BASE = 1_000_000
# The sequence number rides in `progress` as seq / SCALE: a field every subscriber selects.
SCALE = 1000


def raise_fd_limit(needed: int) -> None:
    """A websocket is a file descriptor on each side; children inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        if limit < needed:
            raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {needed} descriptors needed")


def seq_of(progress: object) -> int:
    return round(float(progress) * SCALE) if isinstance(progress, int | float) else 0


# -- the subscribers (child process) ---------------------------------------------------------


@dataclass
class Arrivals:
    """When each event reached each listener of one kind (ws or redis)."""

    listeners: int
    times: dict[int, list[float]] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)

    def record(self, latest: int, seq: int, at: float) -> int:
        """A listener whose newest event was `latest` received `seq` at `at`; its new latest.
        Events it skipped count as arrived now: its state is at least that new."""
        if seq <= latest:
            return latest
        self.received[seq] = self.received.get(seq, 0) + 1
        for covered in range(latest + 1, seq + 1):
            self.times.setdefault(covered, []).append(at)
        return seq

    def complete(self, seq: int) -> bool:
        return len(self.times.get(seq, ())) >= self.listeners

    def dump(self, first: int, last: int, path: Path) -> None:
        seqs = range(first, last + 1)
        received = sum(self.received.get(s, 0) for s in seqs)
        path.write_text(
            json.dumps({"times": {s: self.times[s] for s in seqs}, "received": received})
        )


async def ws_listener(
    url: str, video_id: str, arrivals: Arrivals, gate: asyncio.Semaphore, ready: list[int]
) -> None:
    import websockets
    from websockets.typing import Subprotocol

    async with contextlib.AsyncExitStack() as stack:
        async with gate:
            # Default options: compression offered, as a browser does (clipo-gql declines it).
            ws = await stack.enter_async_context(
                websockets.connect(
                    url, subprotocols=[Subprotocol("graphql-transport-ws")], ping_interval=None
                )
            )
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            while json.loads(await ws.recv())["type"] != "connection_ack":
                pass
            payload = {"query": WATCH, "variables": {"id": video_id}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            first = json.loads(await ws.recv())
            if first["type"] != "next":
                raise RuntimeError(f"subscription refused: {first}")
            latest = seq_of(first["payload"]["data"]["videoStatus"]["progress"])
            ready[0] += 1
        async for raw in ws:
            at = time.time()
            message = json.loads(raw)
            kind = message["type"]
            if kind == "next":
                progress = message["payload"]["data"]["videoStatus"]["progress"]
                latest = arrivals.record(latest, seq_of(progress), at)
            elif kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            else:
                raise RuntimeError(f"subscription ended: {message}")


async def redis_listener(
    redis_url: str, channel: str, arrivals: Arrivals, ready: list[int]
) -> None:
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(channel)
        ready[0] += 1
        latest = 0
        async for message in pubsub.listen():
            at = time.time()
            if message["type"] == "message":
                latest = arrivals.record(
                    latest, seq_of(json.loads(message["data"])["progress"]), at
                )
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode().strip()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def clients(url: str, video_id: str, count: int, redis_url: str, channel: str) -> None:
    """Subscribe `count` websockets and one Redis subscriber, say `ready`, then answer
    `collect KIND FIRST LAST PATH` (write those events' arrivals once all listeners have the
    last one) until `quit`."""
    raise_fd_limit(count + 256)
    kinds = {"ws": Arrivals(count), "redis": Arrivals(1)}
    ready = [0]
    # Handshakes a few dozen at a time: a thousand at once would only queue in the backlog.
    gate = asyncio.Semaphore(32)
    tasks = [
        asyncio.create_task(ws_listener(url, video_id, kinds["ws"], gate, ready))
        for _ in range(count)
    ]
    tasks.append(asyncio.create_task(redis_listener(redis_url, channel, kinds["redis"], ready)))

    async def until(condition: Callable[[], bool], seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not condition():
                failed = [t for t in tasks if t.done()]
                if failed:
                    failed[0].result()  # raises the listener's error
                    raise RuntimeError("a listener stopped")
                await asyncio.sleep(0.01)

    try:
        await until(lambda: ready[0] == len(tasks), 300)
        say("ready")
        async for line in stdin_lines():
            command, *args = line.split()
            if command == "quit":
                break
            kind, first, last, path = args[0], int(args[1]), int(args[2]), Path(args[3])
            arrivals = kinds[kind]
            await until(lambda: arrivals.complete(last), 60)  # noqa: B023 - awaited here
            arrivals.dump(first, last, path)
            say("collected")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the parent: the stalling URL, the server, the publisher ----------------------------------


class StallingServer:
    """Answers any GET with the headers of a large MP4 and then sends nothing."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StallingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 1000000000\r\n\r\n"
            )
            await writer.drain()
            # Until the worker gives the download up (EOF) or we shut down.
            eof = asyncio.ensure_future(reader.read())
            release = asyncio.ensure_future(self._release.wait())
            await asyncio.wait({eof, release}, return_when=asyncio.FIRST_COMPLETED)
            eof.cancel()
            release.cancel()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.disconnected.set()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@dataclass
class Clients:
    proc: asyncio.subprocess.Process
    workdir: Path
    server_pid: int
    collected: int = 0

    async def line(self, seconds: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), seconds)
        if not raw:
            raise RuntimeError("the clients process exited; see its log")
        return raw.decode().strip()

    async def collect(self, kind: str, first: int, last: int) -> tuple[dict[int, list[float]], int]:
        """Arrival times of events first..last (all listeners of `kind`), and how many of
        those (listener, event) pairs were received as themselves rather than skipped."""
        assert self.proc.stdin is not None
        self.collected += 1
        path = self.workdir / f"b6-arrivals-{self.collected}.json"
        self.proc.stdin.write(f"collect {kind} {first} {last} {path}\n".encode())
        await self.proc.stdin.drain()
        if (answer := await self.line(90)) != "collected":
            raise RuntimeError(f"clients process: {answer}")
        data = json.loads(path.read_text())
        return {int(s): t for s, t in data["times"].items()}, int(data["received"])


@contextlib.asynccontextmanager
async def start_clients(
    ctx: Context, ws_url: str, video_id: str, count: int, channel: str, server_pid: int
) -> AsyncIterator[Clients]:
    log = ctx.workdir / "b6-clients.log"
    argv = ["-m", "bench.b6_fanout", "clients", ws_url, video_id, str(count), ctx.redis_url,
            channel]  # fmt: skip
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, env=child_env(ctx), cwd=ctx.workdir,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    clients = Clients(proc=proc, workdir=ctx.workdir, server_pid=server_pid)
    try:
        if (answer := await clients.line(300)) != "ready":
            raise RuntimeError(f"clients process: {answer}")
        yield clients
    except Exception as exc:
        raise RuntimeError(f"{exc!r}; clients log: {log.read_text()[-2000:]}") from exc
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Publisher:
    redis: Redis
    template: dict[str, Any]
    spacing: float
    sent: dict[tuple[str, int], float] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=lambda: {"ws": 0, "redis": 0})

    async def round(self, kind: str, channel: str, events: int) -> tuple[int, int]:
        """`events` events `spacing` apart on `channel`; the first and last sequence numbers."""
        first = self.last[kind] + 1
        started = time.perf_counter()
        for n in range(events):
            seq = first + n
            message = {**self.template, "progress": seq / SCALE, "version": VERSION_BASE + seq}
            data = json.dumps(message)
            # A fixed schedule, so a slow PUBLISH does not stretch the spacing.
            await asyncio.sleep(max(0.0, started + n * self.spacing - time.perf_counter()))
            self.sent[kind, seq] = time.time()
            await self.redis.publish(channel, data)
        self.last[kind] = first + events - 1
        return first, self.last[kind]


@dataclass
class Tally:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    pairs: int = 0
    skipped: int = 0
    events: int = 0
    # Per event: the first subscriber's latency, and the last one's less the first's (ms).
    first: list[float] = field(default_factory=list)
    spread: list[float] = field(default_factory=list)
    # CPU seconds (user + system) during the rounds: {"server": ..., "clients": ...}
    cpu: dict[str, float] = field(default_factory=dict)

    def cpu_ms_per_event(self, side: str) -> float:
        return self.cpu.get(side, 0.0) * 1000 / max(self.events, 1)


async def measure_round(
    clients: Clients, publisher: Publisher, kind: str, channel: str, events: int, tally: Tally
) -> float:
    """One round; its p99 latency in ms over every (listener, event) pair."""
    pids = {"server": clients.server_pid, "clients": clients.proc.pid}
    before = {side: cpu_seconds(pid) for side, pid in pids.items()}
    first, last = await publisher.round(kind, channel, events)
    times, received = await clients.collect(kind, first, last)
    for side, pid in pids.items():
        tally.cpu[side] = tally.cpu.get(side, 0.0) + cpu_seconds(pid) - before[side]
    tally.events += events
    latencies = [
        (at - publisher.sent[kind, seq]) * 1000 for seq, ats in times.items() for at in ats
    ]
    for seq, ats in times.items():
        tally.first.append((min(ats) - publisher.sent[kind, seq]) * 1000)
        tally.spread.append((max(ats) - min(ats)) * 1000)
    tally.p50.append(percentile(latencies, 50))
    tally.pairs += len(latencies)
    tally.skipped += len(latencies) - received
    tally.p99.append(percentile(latencies, 99))
    return tally.p99[-1]


async def template_of(
    redis: Redis, http: httpx.AsyncClient, url: str, prefix: str, stall: StallingServer
) -> tuple[str, dict[str, Any]]:
    """Submit the stalling URL; the video's id and the worker's first event (PROCESSING)."""
    pubsub = redis.pubsub()
    try:
        await pubsub.psubscribe(f"{prefix}:video:*")
        body = (
            await http.post(
                f"{url}/graphql",
                json={
                    "query": SUBMIT,
                    "variables": {"url": f"http://127.0.0.1:{stall.port}/clip.mp4"},
                },
            )
        ).json()
        if "errors" in body:
            raise RuntimeError(f"submitVideo refused: {body['errors']}")
        video_id: str = body["data"]["submitVideo"]["id"]
        async with asyncio.timeout(30):
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is None:
                    continue
                video: dict[str, Any] = json.loads(message["data"])
                if video.get("id") == video_id and video.get("status") == "PROCESSING":
                    break
            await stall.connected.wait()  # the worker is in the download: it will stay there
        return video_id, video
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


# (subscribers, the p99 target in ms): two rows, 6a and 6b.
COUNTS = ((1000, 60.0), (2000, 100.0))
SMOKE_COUNTS = ((50, 60.0), (100, 100.0))


async def run(ctx: Context) -> list[Result]:
    return [
        await run_count(ctx, count, target_ms)
        for count, target_ms in (SMOKE_COUNTS if ctx.smoke else COUNTS)
    ]


async def run_count(ctx: Context, count: int, target_ms: float) -> Result:
    """One row: `count` subscribers of one video, on a server of its own."""
    events = 5 if ctx.smoke else 20
    spacing = 0.1
    raise_fd_limit(count + 512)  # before the server starts: it inherits the limit
    prefix = f"clipo-bench:{uuid.uuid4().hex[:8]}"
    baseline_channel = f"{prefix}:bench-baseline"
    ours_tally, baseline_tally, single = Tally(), Tally(), Tally()
    redis = Redis.from_url(ctx.redis_url)
    try:
        async with StallingServer() as stall, dev_server(
            ctx,
            REDIS_PREFIX=prefix,
            URL_FETCH_ALLOW_PRIVATE="true",
            URL_FETCH_ALLOWED_PORTS=str(stall.port),
            URL_FETCH_READ_TIMEOUT_SECONDS="3600",
        ) as service:  # fmt: skip
            async with httpx.AsyncClient(timeout=30) as http:
                video_id, template = await template_of(redis, http, service.url, prefix, stall)
                publisher = Publisher(redis, template, spacing)
                rss_before = rss_kib(service.proc.pid)
                try:
                    async with start_clients(
                        ctx, service.ws_url, video_id, count, baseline_channel, service.proc.pid
                    ) as clients:
                        # Every subscriber has its first state and waits: idle.
                        idle_kib = (rss_kib(service.proc.pid) - rss_before) / count
                        channel = f"{prefix}:video:{video_id}"
                        # A warm-up round, not counted.
                        await measure_round(clients, publisher, "ws", channel, events, Tally())
                        # One event at a time: what a fan-out costs alone, without a backlog.
                        for _ in range(3):
                            await measure_round(clients, publisher, "ws", channel, 1, single)
                        ours, baseline = await alternate(
                            ctx.repeats,
                            lambda: measure_round(
                                clients, publisher, "ws", channel, events, ours_tally
                            ),
                            lambda: measure_round(
                                clients, publisher, "redis", baseline_channel, events,
                                baseline_tally,
                            ),
                        )  # fmt: skip
                        server_fds = len(os.listdir(f"/proc/{service.proc.pid}/fd"))
                        server_rss = rss_kib(service.proc.pid) / 1024
                finally:
                    # Deleting cancels the stalled job, so no queued job outlives the run.
                    with contextlib.suppress(httpx.HTTPError, TimeoutError):
                        variables = {"id": video_id}
                        await http.post(
                            f"{service.url}/graphql", json={"query": DELETE, "variables": variables}
                        )
                        await asyncio.wait_for(stall.disconnected.wait(), 5)
    finally:
        await redis.aclose()
    baseline_p99 = statistics.median(baseline)
    # The target is absolute (p99 <= target_ms); against the baseline's p99 it becomes
    # a ratio, so `met` says whether our p99 is within target_ms.
    target = float(f"{target_ms / baseline_p99:.4g}")
    return Result(
        number=6,
        name=f"p99 publish → client latency, {count:,} subscribers of one video, "
        f"{events} events {spacing * 1000:.0f} ms apart",
        unit="ms",
        ours=ours,
        baseline=baseline,
        baseline_name="one bare redis-py pub/sub subscriber",
        higher_is_better=False,
        target=target,
        notes=[
            f"{count:,} subscribers: target p99 ≤ {target_ms:.0f} ms, as a ratio to the "
            f"baseline's median p99 ({baseline_p99:.2f} ms): {target}; our median p99 "
            f"{statistics.median(ours):.1f} ms",
            f"p50: ours {statistics.median(ours_tally.p50):.1f} ms, baseline "
            f"{statistics.median(baseline_tally.p50):.2f} ms (medians over repeats)",
            "per event (medians): the first subscriber's latency "
            f"{statistics.median(ours_tally.first):.1f} ms, the last one "
            f"{statistics.median(ours_tally.spread):.1f} ms after the first",
            "CPU per event in the measured rounds: server "
            f"{ours_tally.cpu_ms_per_event('server'):.1f} ms, subscribers' process "
            f"{ours_tally.cpu_ms_per_event('clients'):.1f} ms; one event alone: server "
            f"{single.cpu_ms_per_event('server'):.1f} ms",
            f"one event alone (no backlog), median of 3: p50 "
            f"{statistics.median(single.p50):.1f} ms, "
            f"p99 {statistics.median(single.p99):.1f} ms",
            f"{ours_tally.skipped:,} of {ours_tally.pairs:,} (subscriber, event) pairs were "
            "skipped by a subscriber that fell behind and jumped to a newer state; they "
            "count as delivered with that newer state",
            "subscribers: graphql-transport-ws on the `websockets` library, default "
            "options (they offer permessage-deflate; the server declines it), in one child "
            "process on uvloop; the baseline "
            f"subscriber ran there too, in its own rounds, on another channel; the server "
            f"held {server_fds} file descriptors and {server_rss:.0f} MiB (VmRSS); "
            f"{idle_kib:.1f} KiB of server VmRSS per idle subscriber (connected, first "
            "state received)",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.b6_fanout")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("clients")
    sub.add_argument("url")
    sub.add_argument("video_id")
    sub.add_argument("count", type=int)
    sub.add_argument("redis_url")
    sub.add_argument("channel")
    args = parser.parse_args(argv)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(clients(args.url, args.video_id, args.count, args.redis_url, args.channel))


if __name__ == "__main__":
    main()
