"""Benchmark 5: `videos(first: 50)` throughput over 10,000 stored videos, against a plain
Starlette JSON route running the same MongoDB query.

The MongoDB stand-in lives inside the server process, so nothing outside can seed it: each
side runs in a child process of this module (`serve`) that seeds its own database before it
starts listening. The load comes from a third process (`load`), so neither server shares its
event loop, or its core, with the client. With MONGODB_URL set, both sides use that server,
each in a database of its own that is dropped afterwards.

    python -m bench.b5_videos_query serve PORT ours|baseline [--count N]
    python -m bench.b5_videos_query load URL ours|baseline [--seconds S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx

from bench.common import (
    Context,
    Result,
    alternate,
    capture,
    child_env,
    free_port,
    wait_ready,
)

Mode = Literal["ours", "baseline"]
MODES: tuple[Mode, ...] = ("ours", "baseline")
PAGE = 50
QUERY = (
    f"{{ videos(first: {PAGE}) {{ edges {{ node {{ id filename status createdAt duration }} }}"
    " pageInfo { endCursor hasNextPage } } }"
)
# The order and the look-ahead row of clipo_gql.pagination.page: the baseline asks MongoDB
# exactly what the resolver asks, so the difference is the GraphQL layer.
SORT = [("created_at", -1), ("_id", -1)]
SEEDED = "b5-seeded "


# -- the servers (child process) -------------------------------------------------------------


async def seed(count: int) -> dict[str, float]:
    """`count` DONE videos, one second apart; how long that took and how long one page query
    takes afterwards (which also warms the store)."""
    from clipo_gql.models import Video, VideoSource, VideoStatus, now

    started = time.perf_counter()
    newest = now()
    # DONE, so no worker anywhere would pick them up; a real library is mostly DONE videos.
    await Video.insert_many(
        [
            Video(
                filename=f"clip-{n:05}.mp4",
                source=VideoSource.UPLOAD,
                status=VideoStatus.DONE,
                progress=1.0,
                created_at=newest - timedelta(seconds=n),
                updated_at=newest - timedelta(seconds=n),
                version=4,
                attempts=1,
                size_bytes=5_000_000 + n,
                duration=30.0 + n % 60,
                width=1280,
                height=720,
                video_codec="h264",
                audio_codec="aac",
                frame_rate=30.0,
                bit_rate=1_300_000,
                format_name="mov,mp4,m4a,3gp,3g2,mj2",
                remuxed=True,
            )
            for n in range(count)
        ]
    )
    seeded = time.perf_counter()
    query_seconds = []
    for _ in range(3):  # the fastest of three: the first one also pays for warming up
        begun = time.perf_counter()
        cursor = Video.get_motor_collection().find({}).sort(SORT).limit(PAGE + 1)
        rows = [raw async for raw in cursor]
        query_seconds.append(time.perf_counter() - begun)
        if len(rows) != min(count, PAGE + 1):
            raise RuntimeError(f"seeded {count} videos but a page query found {len(rows)}")
    return {"seed_seconds": seeded - started, "query_seconds": min(query_seconds)}


def ours_app(count: int) -> Any:
    """The real clipo-gql application as `clipo-gql serve` builds it (no embedded worker),
    except that it may use the stand-in and seeds its store during startup."""
    import clipo_gql.app as clipo_app
    from clipo_gql.connections import init_mongo as real_init_mongo
    from clipo_gql.settings import Settings

    # The lifespan connects to MongoDB itself; seeding right after that, inside the same
    # lifespan, means uvicorn only starts listening once the data is there. `serve` (embedded
    # False) refuses the stand-in and `dev` would add a polling worker, hence the wrapper.
    async def init_and_seed(settings: Settings, *, allow_stand_in: bool) -> Any:
        client = await real_init_mongo(settings, allow_stand_in=True)
        print(SEEDED + json.dumps(await seed(count)), flush=True)
        return client

    clipo_app.init_mongo = init_and_seed  # type: ignore[attr-defined]
    return clipo_app.create_app(Settings(), embedded=False)


def baseline_app(count: int) -> Any:
    """A plain Starlette route: the same MongoDB query, the same fields, as JSON."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from clipo_gql.connections import init_mongo
    from clipo_gql.models import Video
    from clipo_gql.settings import Settings

    settings = Settings()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        client = await init_mongo(settings, allow_stand_in=True)
        print(SEEDED + json.dumps(await seed(count)), flush=True)
        try:
            yield
        finally:
            client.close()

    async def videos(request: Request) -> Response:
        first = int(request.query_params.get("first", PAGE))
        cursor = Video.get_motor_collection().find({}).sort(SORT).limit(first + 1)
        rows = [raw async for raw in cursor]
        page = rows[:first]
        return JSONResponse(
            {
                "videos": [
                    {
                        "id": str(raw["_id"]),
                        "filename": raw["filename"],
                        "status": raw["status"],
                        "createdAt": raw["created_at"].isoformat(),
                        "duration": raw.get("duration"),
                    }
                    for raw in page
                ],
                "endCursor": str(page[-1]["_id"]) if page else None,
                "hasNextPage": len(rows) > first,
            }
        )

    async def readyz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/videos", videos), Route("/readyz", readyz, methods=["GET", "HEAD"])],
        lifespan=lifespan,
    )


def serve(port: int, mode: Mode, count: int) -> None:
    import uvicorn

    app = ours_app(count) if mode == "ours" else baseline_app(count)
    # The same uvicorn settings for both sides (uvloop, httptools); no access log, whose
    # cost per request would be the same on both and is not what is measured.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the load generator (child process) ------------------------------------------------------


def _check(mode: Mode, body: Any) -> None:
    if mode == "ours":
        connection = body["data"]["videos"]
        rows, more = connection["edges"], connection["pageInfo"]["hasNextPage"]
    else:
        rows, more = body["videos"], body["hasNextPage"]
    if len(rows) != PAGE or not more:
        raise RuntimeError(f"{mode}: expected a full page with more to come, got {body!r:.300}")


async def load(url: str, mode: Mode, seconds: float, warmup: float, concurrency: int) -> float:
    """Requests per second with `concurrency` requests always in flight (a closed loop).

    Only completions inside the window after `warmup` count, and the rate is taken between
    the first and the last of them: with a slow store a request takes seconds, and counting
    whole requests over a fixed time would round that away.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as http:

        async def one() -> httpx.Response:
            if mode == "ours":
                return await http.post("/graphql", json={"query": QUERY})
            return await http.get("/videos", params={"first": PAGE})

        first = await one()
        first.raise_for_status()
        _check(mode, first.json())
        completed: list[float] = []
        start = time.perf_counter() + warmup
        end = start + seconds

        async def client() -> None:
            while time.perf_counter() < end:
                response = await one()
                if response.status_code != 200:
                    raise RuntimeError(f"{mode}: HTTP {response.status_code}: {response.text}")
                completed.append(time.perf_counter())

        # Every request in flight at the end is awaited (not counted): abandoning them would
        # leave the server busy while the other side is measured.
        await asyncio.gather(*(client() for _ in range(concurrency)))
    inside = [t for t in completed if start <= t <= end]
    if len(inside) < 3:
        raise RuntimeError(f"{mode}: only {len(inside)} requests completed in {seconds} s")
    return (len(inside) - 1) / (inside[-1] - inside[0])


# -- the parent: servers, load runs, the result -----------------------------------------------


@dataclass
class Server:
    mode: Mode
    url: str
    log: Path
    database: str

    def seeded(self) -> dict[str, float]:
        for line in self.log.read_text().splitlines():
            if line.startswith(SEEDED):
                stats: dict[str, float] = json.loads(line.removeprefix(SEEDED))
                return stats
        raise RuntimeError(f"{self.log}: the server did not report its seeding")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@asynccontextmanager
async def server(ctx: Context, mode: Mode, count: int) -> AsyncIterator[Server]:
    run = uuid.uuid4().hex[:8]
    port = free_port()
    database = f"clipo_bench_b5_{mode}_{run}"
    env = child_env(
        ctx,
        MONGODB_DATABASE=database,
        REDIS_PREFIX=f"clipo-bench:{run}",
        QUEUE_NAME=f"clipo-bench:{run}:queue",
        MEDIA_DIR=str(ctx.workdir / f"b5-media-{run}"),
    )
    log = ctx.workdir / f"b5-{mode}-{run}.log"
    argv = ["-m", "bench.b5_videos_query", "serve", str(port), mode, "--count", str(count)]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, env=env, cwd=ctx.workdir, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Seeding 10,000 documents into the stand-in takes seconds.
        await wait_ready(
            url, lambda: proc.returncode is not None, f"the {mode} server (log: {log})", 120
        )
        yield Server(mode=mode, url=url, log=log, database=database)
    finally:
        await stop(proc)
        await drop_database(database)


async def drop_database(name: str) -> None:
    mongodb_url = os.environ.get("MONGODB_URL")
    if not mongodb_url:
        return  # the stand-in went with its process
    from motor.motor_asyncio import AsyncIOMotorClient
    from pymongo.errors import PyMongoError

    client: Any = AsyncIOMotorClient(mongodb_url, serverSelectionTimeoutMS=5000)
    try:
        await client.drop_database(name)
    except PyMongoError as exc:  # cleanup must not hide the error that brought us here
        print(f"b5: could not drop database {name}: {exc}", file=sys.stderr)
    finally:
        client.close()


async def measure(
    ctx: Context, target: Server, seconds: float, warmup: float, concurrency: int
) -> float:
    argv = ["-m", "bench.b5_videos_query", "load", target.url, target.mode,
            "--seconds", str(seconds), "--warmup", str(warmup),
            "--concurrency", str(concurrency)]  # fmt: skip
    returncode, out, err = await capture(sys.executable, *argv, env=child_env(ctx), cwd=ctx.workdir)
    if returncode != 0:
        raise RuntimeError(f"load generator for {target.mode} failed:\n{err.decode()[-2000:]}")
    rate: float = json.loads(out)["rate"]
    return rate


async def run(ctx: Context) -> list[Result]:
    count = 300 if ctx.smoke else 10_000
    seconds, warmup = (1.0, 0.3) if ctx.smoke else (7.0, 1.0)
    concurrency = 4 if ctx.smoke else 10
    async with server(ctx, "ours", count) as ours, server(ctx, "baseline", count) as baseline:
        ours_rates, baseline_rates = await alternate(
            ctx.repeats,
            lambda: measure(ctx, ours, seconds, warmup, concurrency),
            lambda: measure(ctx, baseline, seconds, warmup, concurrency),
        )
        stats = ours.seeded()
    if os.environ.get("MONGODB_URL"):
        store = f"MongoDB at MONGODB_URL (databases {ours.database}, {baseline.database})"
    else:
        store = "the in-process mongomock stand-in (MONGODB_URL unset), one per server process"
    # How much of a request the store alone takes: near 100 % means the row compares the
    # store with itself, not the GraphQL layer with a plain route.
    query_ms = stats["query_seconds"] * 1000
    request_ms = 1000 / statistics.median(baseline_rates)
    return [
        Result(
            number=5,
            name=f"videos(first: {PAGE}) over {count:,} videos, {concurrency} concurrent",
            unit="req/s",
            ours=ours_rates,
            baseline=baseline_rates,
            baseline_name="a plain Starlette JSON route, same MongoDB query and fields",
            higher_is_better=True,
            target=0.5,
            notes=[
                f"database: {store}; the page query alone took {query_ms:.0f} ms in it, "
                f"against {request_ms:.0f} ms per baseline request at its median rate",
                "the query does not select totalCount, so neither side counts (clipo-gql "
                "counts only when totalCount is selected)",
                f"load: a separate httpx process, {concurrency} requests in flight, "
                f"{seconds:g} s measured after {warmup:g} s of warm-up per repeat",
            ],
        )
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.b5_videos_query")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve")
    serve_cmd.add_argument("port", type=int)
    serve_cmd.add_argument("mode", choices=MODES)
    serve_cmd.add_argument("--count", type=int, default=10_000)
    load_cmd = commands.add_parser("load")
    load_cmd.add_argument("url")
    load_cmd.add_argument("mode", choices=MODES)
    load_cmd.add_argument("--seconds", type=float, default=7.0)
    load_cmd.add_argument("--warmup", type=float, default=1.0)
    load_cmd.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.mode, args.count)
        return
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rate = runner.run(load(args.url, args.mode, args.seconds, args.warmup, args.concurrency))
    print(json.dumps({"rate": rate}))


if __name__ == "__main__":
    main()
