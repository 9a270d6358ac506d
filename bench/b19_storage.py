"""Benchmarks 19 and 20: object storage (issue "scale-out"), on the S3 server the test
command starts (scripts/seaweedfs-env: CLIPO_S3_ENDPOINT_URL and friends); skipped without it.

19. A 1 GiB upload (GraphQL multipart) into a `clipo-gql dev` with STORAGE_URL on the S3
    server, streamed into an S3 multipart upload, against the same bytes put by the S3 client
    alone (obstore's `put` of the file, in a process of its own). MB/s; target ≥ 0.8×. The API
    process's RSS growth during the upload is reported (target ≤ 64 MiB).
20. Upload → DONE of the 30 s 720p clip on the S3 server against the same on the local disk
    (two `clipo-gql dev`, alternated). Seconds; target ≤ 1.2×.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid

import httpx

from bench.b3_upload import make_upload, watch_rss
from bench.common import Context, Result, alternate, dev_server, make_clip, until_final, upload
from tests.s3server import REGION, S3Server, from_env, seaweedfs_s3

MiB = 1024 * 1024
PUT = """
import asyncio, os, sys, obstore
from pathlib import Path
from obstore.store import S3Store
from clipo_gql.storage.s3 import PART_BYTES, PARTS_IN_FLIGHT
url, bucket, key, secret, path, name = sys.argv[1:]
store = S3Store(bucket, endpoint=url, access_key_id=key, secret_access_key=secret,
                region="us-east-1", virtual_hosted_style_request=False,
                client_options={"allow_http": True})
async def main():  # put_async needs the running loop when it is called
    await obstore.put_async(store, name, Path(path), chunk_size=PART_BYTES,
                            max_concurrency=PARTS_IN_FLIGHT)
asyncio.run(main())
# The put is done; obstore's runtime threads can abort (SIGABRT) a normal interpreter exit.
sys.stdout.flush()
os._exit(0)
"""


def s3_env(server: S3Server) -> dict[str, str]:
    """A `clipo-gql dev`'s settings for a prefix of its own on `server`."""
    return {
        "STORAGE_URL": f"s3://{server.bucket}/bench-{uuid.uuid4().hex[:8]}",
        "S3_ENDPOINT_URL": server.endpoint_url,
        "S3_REGION": REGION,
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
    }


async def run(ctx: Context) -> list[Result]:
    with contextlib.ExitStack() as stack:
        server = from_env()
        if server is None and os.environ.get("CLIPO_SEAWEEDFS_BIN"):
            server = stack.enter_context(seaweedfs_s3())
        if server is None:
            print("rows 19-20: no S3 server (scripts/seaweedfs-env builds one): skipped",
                  file=sys.stderr)  # fmt: skip
            return []
        return await _run(ctx, server)


async def _run(ctx: Context, server: S3Server) -> list[Result]:
    env = s3_env(server)
    size = 32 * MiB if ctx.smoke else 1 << 30
    head = make_clip(ctx.workdir / "b19-head.mp4", seconds=1.0, size="320x240")
    path = await asyncio.to_thread(make_upload, ctx.workdir / "b19.mp4", head, size)
    clip = make_clip(ctx.workdir / "b19-720p.mp4", seconds=2.0 if ctx.smoke else 30.0)
    growth: list[float] = []

    async with (
        dev_server(ctx, MAX_UPLOAD_BYTES=str(4 << 30), **env) as service,
        httpx.AsyncClient(timeout=600) as http,
    ):
        pid = service.proc.pid

        async def ours() -> float:
            started = time.perf_counter()
            async with watch_rss(lambda: [pid]) as rss:
                video_id = await upload(http, service, path)
            seconds = time.perf_counter() - started
            growth.append(rss.growth_mib)
            await until_final(service, video_id)  # FAILED: a clip's head, then noise
            await http.post(
                f"{service.url}/graphql",
                json={"query": f'mutation {{ deleteVideo(id: "{video_id}") }}'},
            )
            return size / MiB / seconds

        async def baseline() -> float:
            started = time.perf_counter()
            await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", PUT, env["S3_ENDPOINT_URL"],
                 server.bucket, env["AWS_ACCESS_KEY_ID"],
                 env["AWS_SECRET_ACCESS_KEY"], str(path), f"bench-put-{uuid.uuid4().hex}"],
                check=True,
            )  # fmt: skip
            return size / MiB / (time.perf_counter() - started)

        upload_ours, upload_base = await alternate(ctx.repeats, ours, baseline)

    async def to_done(storage_env: dict[str, str]) -> float:
        async with dev_server(ctx, **storage_env) as service, httpx.AsyncClient(timeout=600) as h:
            await upload(h, service, clip)  # warm-up: imports, ffmpeg's first start
            started = time.perf_counter()
            video_id = await upload(h, service, clip)
            status = await until_final(service, video_id)
            if status != "DONE":
                raise RuntimeError(f"the clip ended {status}")
            return time.perf_counter() - started

    async def done_s3() -> float:
        return await to_done(s3_env(server))

    async def done_local() -> float:
        return await to_done({})

    done_ours, done_base = await alternate(ctx.repeats, done_s3, done_local)
    return [
        Result(
            19, "1 GiB upload into S3 (streamed multipart)", "MB/s", upload_ours, upload_base,
            "obstore put of the same file, alone", True, 0.8,
            notes=[f"API RSS growth during the upload: {max(growth):.0f} MiB (target ≤ 64)"],
        ),
        Result(
            20, "upload → DONE, 30 s 720p clip, on S3", "s", done_ours, done_base,
            "the same on the local disk", False, 1.2,
        ),
    ]  # fmt: skip
