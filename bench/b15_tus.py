"""Benchmarks 15 and 16: resumable uploads through tus (`/uploads`, tus 1.0.0).

15. 1 GiB through tus in 8 MiB `PATCH`es against the same bytes through GraphQL multipart, to
    the same server, with the same client (httpx, one connection, the file in the page cache;
    MB = 10^6 bytes). The tus time runs from the creation `POST` to the last `PATCH`'s `204`;
    the multipart time to the mutation's answer: both end once the file is in place and
    queued. The server's VmRSS is polled every 20 ms during each tus upload (budget 64 MiB).
16. Resume cost: a tus upload whose connection is cut in the middle of the `PATCH` that
    crosses 50 %, then `HEAD` and `PATCH`es from the offset it answers, as a tus client does.
    Bytes sent again are the bytes the client had sent before the cut minus that offset
    (target: at most one chunk); GraphQL multipart would send everything sent so far again.

Each upload is deleted through `deleteVideo` right after it is timed (as in row 3), so the
worker never competes with the next upload.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from bench.b3_upload import (
    RSS_BUDGET_MIB,
    MiB,
    cpu_seconds,
    delete_ours,
    make_upload,
    size_text,
    watch_rss,
)
from bench.common import Context, Result, Service, alternate, dev_server, make_clip, upload

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"


class Cut(Exception):
    """Raised inside a request body to drop the connection mid-PATCH."""


def size_of(path: Path) -> int:
    return path.stat().st_size


async def create(http: httpx.AsyncClient, service: Service, path: Path) -> tuple[str, str]:
    """A new tus upload of `path`: its URL and its video id."""
    name = base64.b64encode(path.name.encode()).decode()
    response = await http.post(
        f"{service.url}/uploads",
        headers={**TUS, "Upload-Length": str(size_of(path)),
                 "Upload-Metadata": f"filename {name},filetype dmlkZW8vbXA0"},
    )  # fmt: skip
    if response.status_code != 201:
        raise RuntimeError(f"tus creation refused: {response.status_code} {response.text}")
    return response.headers["location"], response.headers["clipo-video-id"]


async def patch(
    http: httpx.AsyncClient, url: str, offset: int, body: bytes | AsyncIterator[bytes], size: int
) -> httpx.Response:
    return await http.patch(
        url,
        content=body,
        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_TYPE,
                 "Content-Length": str(size)},
    )  # fmt: skip


def read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as fh:
        return os.pread(fh.fileno(), size, offset)


async def send_from(http: httpx.AsyncClient, url: str, path: Path, offset: int, chunk: int) -> None:
    """PATCH the file from `offset` to its end, `chunk` bytes a request."""
    size = size_of(path)
    while offset < size:
        data = await asyncio.to_thread(read_at, path, offset, min(chunk, size - offset))
        response = await patch(http, url, offset, data, len(data))
        if response.status_code != 204:
            status = response.status_code
            raise RuntimeError(f"PATCH at {offset} answered {status}: {response.text}")
        offset = int(response.headers["upload-offset"])


async def upload_tus(http: httpx.AsyncClient, service: Service, path: Path, chunk: int) -> str:
    url, video_id = await create(http, service, path)
    await send_from(http, url, path, 0, chunk)
    return video_id


async def head_offset(http: httpx.AsyncClient, url: str) -> int:
    response = await http.head(url, headers=TUS)
    if response.status_code != 200:
        raise RuntimeError(f"HEAD answered {response.status_code}")
    return int(response.headers["upload-offset"])


async def cut_and_resume(
    http: httpx.AsyncClient, service: Service, path: Path, chunk: int
) -> tuple[int, float, str]:
    """One upload cut at 50 %: bytes sent again, seconds from the cut to the resumed PATCH's
    start (HEAD included, and waits while the cut request still holds the upload), video id."""
    size = size_of(path)
    half = size // 2
    url, video_id = await create(http, service, path)
    offset = 0
    while offset + chunk <= half:  # the whole chunks before the one that crosses 50 %
        data = await asyncio.to_thread(read_at, path, offset, chunk)
        response = await patch(http, url, offset, data, len(data))
        offset = int(response.headers["upload-offset"])
    sent = offset
    length = min(chunk, size - offset)
    data = await asyncio.to_thread(read_at, path, offset, length)

    async def until_half() -> AsyncIterator[bytes]:
        nonlocal sent
        for start in range(0, length, MiB):
            if sent >= half:
                raise Cut  # httpx drops the connection: the server sees a disconnect
            piece = data[start : start + MiB]
            sent += len(piece)
            yield piece

    try:
        await patch(http, url, offset, until_half(), length)
        raise RuntimeError("the PATCH was not cut")
    except Cut:
        pass
    cut_at = time.perf_counter()
    while True:
        resumed = await head_offset(http, url)
        probe = await asyncio.to_thread(read_at, path, resumed, min(chunk, size - resumed))
        response = await patch(http, url, resumed, probe, len(probe))
        if response.status_code == 204:
            break
        if response.status_code not in (409, 423):  # the cut request still holds the upload
            raise RuntimeError(f"resume PATCH answered {response.status_code}: {response.text}")
        await asyncio.sleep(0.02)
    waited = time.perf_counter() - cut_at
    await send_from(http, url, path, int(response.headers["upload-offset"]), chunk)
    if await head_offset(http, url) != size:
        raise RuntimeError("the resumed upload is not complete")
    return sent - resumed, waited, video_id


async def run(ctx: Context) -> list[Result]:
    size, resume_size, chunk = (
        (16 * MiB, 16 * MiB, 2 * MiB) if ctx.smoke else (1 << 30, 256 * MiB, 8 * MiB)
    )
    clip = make_clip(ctx.workdir / "b15-head.mp4", seconds=1.0, size="320x240")
    path = await asyncio.to_thread(make_upload, ctx.workdir / "b15.mp4", clip, size)
    resume_path = await asyncio.to_thread(
        make_upload, ctx.workdir / "b15-resume.mp4", clip, resume_size
    )
    growth: list[float] = []
    cpu: dict[str, list[float]] = {"tus": [], "multipart": []}
    resent: list[float] = []
    waits: list[float] = []
    async with (
        dev_server(ctx, MAX_UPLOAD_BYTES=str(4 << 30)) as service,
        httpx.AsyncClient(timeout=300) as http,
    ):
        pid = service.proc.pid

        async def tus_once() -> float:
            started, used = time.perf_counter(), cpu_seconds([pid])
            async with watch_rss(lambda: [pid]) as rss:
                video_id = await upload_tus(http, service, path, chunk)
            seconds = time.perf_counter() - started
            cpu["tus"].append(cpu_seconds([pid]) - used)
            growth.append(rss.growth_mib)
            await delete_ours(http, service, video_id)
            return size / 1e6 / seconds

        async def multipart_once() -> float:
            started, used = time.perf_counter(), cpu_seconds([pid])
            video_id = await upload(http, service, path)
            seconds = time.perf_counter() - started
            cpu["multipart"].append(cpu_seconds([pid]) - used)
            await delete_ours(http, service, video_id)
            return size / 1e6 / seconds

        # Warm-up: imports, the first connection, the allocator's first arenas.
        await delete_ours(http, service, await upload_tus(http, service, resume_path, chunk))
        await delete_ours(http, service, await upload(http, service, resume_path))
        ours, baseline = await alternate(ctx.repeats, tus_once, multipart_once)
        for _ in range(ctx.repeats):
            again, waited, video_id = await cut_and_resume(http, service, resume_path, chunk)
            resent.append(again / MiB)
            waits.append(waited)
            await delete_ours(http, service, video_id)
    for file in (path, resume_path, clip):
        file.unlink()
    worst = max(growth)
    chunk_mib = chunk / MiB
    return [
        Result(
            number=15,
            name=f"upload {size_text(size)}, tus in {size_text(chunk)} PATCHes vs GraphQL "
            "multipart",
            unit="MB/s",
            ours=ours,
            baseline=baseline,
            baseline_name="GraphQL multipart of the same bytes to the same server",
            higher_is_better=True,
            target=0.8,
            notes=[
                "client: httpx for both (one connection, the file in the page cache); tus: "
                f"creation POST, then {size // chunk} PATCHes of {size_text(chunk)} read with "
                "pread; multipart: httpx's streamed multipart body",
                f"server RSS growth during one tus upload, worst of {len(growth)} (peak VmRSS "
                f"polled every 20 ms − VmRSS before it): {worst:.1f} MiB (≤ {RSS_BUDGET_MIB} "
                f"MiB: {'met' if worst <= RSS_BUDGET_MIB else '**missed**'})",
                f"server CPU time (user + system) per upload, median: tus "
                f"{statistics.median(cpu['tus']):.2f} s, multipart "
                f"{statistics.median(cpu['multipart']):.2f} s",
            ],
        ),
        Result(
            number=16,
            name=f"tus resume after a connection cut at 50 % of {size_text(resume_size)}",
            unit="MiB sent again",
            ours=resent,
            baseline=[chunk_mib] * len(resent),
            baseline_name=f"one chunk ({size_text(chunk)}); multipart would send "
            f"{resume_size / 2 / MiB:.0f} MiB again",
            higher_is_better=False,
            target=1.0,
            notes=[
                "the cut: the request body (1 MiB pieces) raises in the middle of the PATCH "
                "that crosses 50 %, so httpx drops the connection; bytes sent again = bytes "
                "handed to the socket before the cut − the offset HEAD answers",
                f"from the cut to the accepted resume PATCH (HEAD, and a 409/423 while the cut "
                f"request still held the upload), median: {statistics.median(waits) * 1000:.0f} ms",
            ],
        ),
    ]
