"""Row 9: what metrics cost. Two `clipo-gql dev` processes side by side, one with metrics on
(the default: HTTP and GraphQL counting, /metrics scraped during the run) and one with
METRICS_ENABLED=false.

- 9a upload → DONE with metrics on vs off: ≤ 1.03×.
- 9b the `videos` query, requests per second, metrics on vs off: ≥ 0.97×.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx

from bench.b3_upload import cpu_seconds
from bench.common import Context, Result, Service, alternate, dev_server, make_clip, until_final
from bench.common import upload as upload_video

ENV = {"RATE_LIMIT_VIDEOS": "100000/minute", "MAX_ACTIVE_VIDEOS": "100000"}
VIDEOS = "{ videos(first: 20) { edges { node { id status filename streamUrl } } } }"
CONCURRENCY = 16
# What a Prometheus server does: one scrape every few seconds (15 s is its default).
SCRAPE_EVERY = 5.0


async def queries_per_second(service: Service, seconds: float, expect: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await http.post("/graphql", json={"query": VIDEOS})
            if len(response.json()["data"]["videos"]["edges"]) != expect:
                raise RuntimeError(response.text)
            done += 1

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=service.url, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - started)


async def to_done(service: Service, clip: Path) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as http:
        video_id = await upload_video(http, service, clip)
    if (status := await until_final(service, video_id)) != "DONE":
        raise RuntimeError(f"video {video_id} ended {status}")
    return time.perf_counter() - started


async def scraping(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        while True:
            response = await http.get("/metrics")
            if response.status_code != 200 or "clipo_jobs_total" not in response.text:
                raise RuntimeError(f"/metrics answered {response.status_code}")
            await asyncio.sleep(SCRAPE_EVERY)


async def run(ctx: Context) -> list[Result]:
    seconds = 1.0 if ctx.smoke else 5.0
    short_seconds = 2 if ctx.smoke else 10
    short = make_clip(ctx.workdir / "b9-short.mp4", seconds=short_seconds)
    async with (
        dev_server(ctx, **ENV) as on,
        dev_server(ctx, METRICS_ENABLED="false", **ENV) as off,
    ):
        async with httpx.AsyncClient(base_url=off.url) as http:
            if (await http.get("/metrics")).status_code != 404:
                raise RuntimeError("METRICS_ENABLED=false still serves /metrics")
        scraper = asyncio.create_task(scraping(on))
        try:
            await to_done(on, short)  # warm both
            await to_done(off, short)
            done_on, done_off = await alternate(
                ctx.repeats, lambda: to_done(on, short), lambda: to_done(off, short)
            )
            videos = ctx.repeats + 1
            for service in (on, off):  # warm-up: connections, the validation cache
                await queries_per_second(service, seconds, videos)
            cpu = {on.url: 0.0, off.url: 0.0}
            counted = {on.url: 0.0, off.url: 0.0}

            async def rate(service: Service) -> float:
                started = cpu_seconds([service.proc.pid])
                per_second = await queries_per_second(service, seconds, videos)
                cpu[service.url] += cpu_seconds([service.proc.pid]) - started
                counted[service.url] += per_second * seconds
                return per_second

            query_on, query_off = await alternate(ctx.repeats, lambda: rate(on), lambda: rate(off))
        finally:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
    per_request = {url: 1000 * cpu[url] / max(1.0, counted[url]) for url in cpu}
    both = (
        "two `clipo-gql dev` processes side by side on the stand-in, METRICS_ENABLED true vs false"
    )
    return [
        Result(
            number=9, name="upload → DONE, metrics on vs off", unit="s",
            ours=done_on, baseline=done_off, baseline_name="METRICS_ENABLED=false",
            higher_is_better=False, target=1.03,
            notes=[
                f"a {short_seconds} s 720p H.264/AAC clip (remux), followed over the "
                f"subscription; /metrics scraped every {SCRAPE_EVERY:g} s; {both}"
            ],
        ),
        Result(
            number=9, name="videos(first: 20), metrics on vs off", unit="req/s",
            ours=query_on, baseline=query_off, baseline_name="METRICS_ENABLED=false",
            higher_is_better=True, target=0.97,
            notes=[
                f"{CONCURRENCY} concurrent httpx clients for {seconds:g} s each side, "
                f"a page of {ctx.repeats + 1} videos",
                f"server CPU per request: {per_request[on.url]:.2f} ms on, "
                f"{per_request[off.url]:.2f} ms off",
            ],
        ),
    ]  # fmt: skip
