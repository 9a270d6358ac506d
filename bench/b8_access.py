"""Row 8: what access control costs. Two `clipo-gql dev` processes side by side, one with
AUTH_MODE=required (JWTs, signed media URLs, per-owner limits on), one with AUTH_MODE=off.

- 8a `video(id)` requests per second, with a JWT vs without: ≥ 0.9×.
- 8b `/stream` random 1 MiB ranges with a signed URL vs the unsigned URL: ≥ 0.95×.
- 8c upload → DONE with auth and limits on vs off: ≤ 1.02×.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bench.b3_upload import cpu_seconds
from bench.b4_stream import ranges
from bench.common import Context, Result, Service, alternate, dev_server, make_clip, until_final
from bench.common import upload as upload_video
from clipo_gql.auth.tokens import mint
from clipo_gql.settings import Settings

SECRET = "bench-jwt-secret-" + "j" * 32
AUTH_ENV = {
    "AUTH_MODE": "required",
    "AUTH_JWT_SECRET": SECRET,
    "MEDIA_URL_SECRET": "bench-media-secret-" + "m" * 32,
    # The limits stay on (checked on every new video), only high enough for the run.
    "RATE_LIMIT_VIDEOS": "100000/minute",
    "QUOTA_BYTES": str(10**12),
}
OFF_ENV = {"AUTH_MODE": "off", "RATE_LIMIT_VIDEOS": "100000/minute"}
VIDEO = "query($id: ID!) { video(id: $id) { id status streamUrl } }"
CONCURRENCY = 16


def bearer() -> dict[str, str]:
    token = mint(Settings(auth_jwt_secret=SecretStr(SECRET)), "bench", ttl_seconds=3600)
    return {"Authorization": f"Bearer {token}"}


async def queries_per_second(
    service: Service, video_id: str, headers: dict[str, str], seconds: float
) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await http.post(
                "/graphql", json={"query": VIDEO, "variables": {"id": video_id}}
            )
            if response.json()["data"]["video"]["id"] != video_id:
                raise RuntimeError(response.text)
            done += 1

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=service.url, headers=headers, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - started)


async def to_done(service: Service, clip: Path, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, headers=headers) as http:
        video_id = await upload_video(http, service, clip)
    status = await until_final(service, video_id, authorization=headers.get("Authorization"))
    if status != "DONE":
        raise RuntimeError(f"video {video_id} ended {status}")
    return time.perf_counter() - started


async def stream_url(service: Service, video_id: str, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=service.url, headers=headers) as http:
        response = await http.post("/graphql", json={"query": VIDEO, "variables": {"id": video_id}})
        url: str = response.json()["data"]["video"]["streamUrl"]
        return url


async def run(ctx: Context) -> list[Result]:
    seconds = 1.0 if ctx.smoke else 5.0
    range_count = 100 if ctx.smoke else 2000
    short_seconds = 2 if ctx.smoke else 10
    short = make_clip(ctx.workdir / "b8-short.mp4", seconds=short_seconds)
    long = make_clip(ctx.workdir / "b8-long.mp4", seconds=6 if ctx.smoke else 60)
    headers = bearer()
    none: dict[str, str] = {}
    async with dev_server(ctx, **AUTH_ENV) as auth, dev_server(ctx, **OFF_ENV) as off:
        # Warm both, and make the file the ranges are read from.
        await to_done(auth, short, headers)
        await to_done(off, short, none)
        async with httpx.AsyncClient(timeout=300, headers=headers) as http:
            auth_id = await upload_video(http, auth, long)
        async with httpx.AsyncClient(timeout=300) as http:
            off_id = await upload_video(http, off, long)
        for service, video_id, h in ((auth, auth_id, headers), (off, off_id, none)):
            if await until_final(service, video_id, authorization=h.get("Authorization")) != "DONE":
                raise RuntimeError("the ranges' file did not process")
        size = (auth.media / "videos" / auth_id / "video.mp4").stat().st_size
        signed, unsigned = (
            await stream_url(auth, auth_id, headers),
            await stream_url(off, off_id, none),
        )
        if "token=" not in signed or "token=" in unsigned:
            raise RuntimeError(f"expected only the first to be signed: {signed}, {unsigned}")

        query_auth, query_off = await alternate(
            ctx.repeats,
            lambda: queries_per_second(auth, auth_id, headers, seconds),
            lambda: queries_per_second(off, off_id, none, seconds),
        )
        for url in (signed, unsigned):  # warm-up: the page cache, the first connections
            await ranges(url, size, CONCURRENCY, seed=-1)
        seeds = iter(range(2 * ctx.repeats))  # both sides of a round read the same ranges

        # Server CPU per request besides the rate: a steadier measure on a shared machine.
        cpu = {signed: 0.0, unsigned: 0.0}
        pids = {signed: [auth.proc.pid], unsigned: [off.proc.pid]}

        async def rate(url: str) -> float:
            started = cpu_seconds(pids[url])
            per_second = (await ranges(url, size, range_count, next(seeds) // 2))[0]
            cpu[url] += cpu_seconds(pids[url]) - started
            return per_second

        range_auth, range_off = await alternate(
            ctx.repeats, lambda: rate(signed), lambda: rate(unsigned)
        )
        per_request = {url: 1000 * cpu[url] / (range_count * ctx.repeats) for url in cpu}
        done_auth, done_off = await alternate(
            ctx.repeats, lambda: to_done(auth, short, headers), lambda: to_done(off, short, none)
        )
    both = (
        "two `clipo-gql dev` processes side by side on the stand-in, one AUTH_MODE=required "
        "(HS256 JWT, signed media URLs, QUOTA_BYTES set, the rate limit checked in Redis) and "
        "one AUTH_MODE=off (its rate limit is checked too, per address)"
    )
    return [
        Result(
            number=8, name="video(id) with a JWT vs auth off", unit="req/s",
            ours=query_auth, baseline=query_off, baseline_name="AUTH_MODE=off",
            higher_is_better=True, target=0.9,
            notes=[f"{CONCURRENCY} concurrent httpx clients for {seconds:g} s each side; {both}"],
        ),
        Result(
            number=8, name="/stream 1 MiB ranges, signed URL vs unsigned", unit="req/s",
            ours=range_auth, baseline=range_off, baseline_name="unsigned URL, AUTH_MODE=off",
            higher_is_better=True, target=0.95,
            notes=[
                f"curl, {range_count} random 1 MiB ranges of a {size / 1e6:.1f} MB file",
                f"server CPU per request: {per_request[signed]:.2f} ms signed, "
                f"{per_request[unsigned]:.2f} ms unsigned",
            ],
        ),
        Result(
            number=8, name="upload → DONE with auth and limits on vs off", unit="s",
            ours=done_auth, baseline=done_off, baseline_name="AUTH_MODE=off",
            higher_is_better=False, target=1.02,
            notes=[
                f"a {short_seconds} s 720p H.264/AAC clip (remux), followed over the subscription"
            ],
        ),
    ]  # fmt: skip
