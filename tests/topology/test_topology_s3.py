"""compose.yaml's processes with STORAGE_URL on the suite's S3 server and no shared disk:
each API and worker process has a MEDIA_DIR of its own (its scratch), so every byte that
passes from one process to another goes through the store."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from clipo_gql.settings import Settings
from clipo_gql.storage.s3 import ObjectStore
from tests.clips import Clips
from tests.test_tus import OCTETS, TUS
from tests.topology.clients import Watcher, upload_id
from tests.topology.topology import Topology, running

pytestmark = pytest.mark.skipif(
    not os.environ.get("CLIPO_S3_ENDPOINT_URL"),
    reason="no S3 server (scripts/seaweedfs-env builds one with Go)",
)


@pytest.fixture(scope="module")
def s3_env() -> dict[str, str]:
    return {
        "STORAGE_URL": f"s3://{os.environ['CLIPO_S3_BUCKET']}/topology-{uuid.uuid4().hex[:8]}",
        "S3_ENDPOINT_URL": os.environ["CLIPO_S3_ENDPOINT_URL"],
        "S3_REGION": os.environ.get("CLIPO_S3_REGION", "us-east-1"),
        "AWS_ACCESS_KEY_ID": os.environ["CLIPO_S3_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["CLIPO_S3_SECRET_ACCESS_KEY"],
    }


@pytest.fixture(scope="module")
def s3topo(tmp_path_factory: pytest.TempPathFactory, s3_env: dict[str, str]) -> Iterator[Topology]:
    folder = tmp_path_factory.mktemp("topology-s3")
    with running(folder, extra_env=s3_env, shared_media=False) as started:
        yield started


def store(s3_env: dict[str, str]) -> ObjectStore:
    return ObjectStore(Settings.model_validate({k.lower(): v for k, v in s3_env.items()}))


async def names(s3_env: dict[str, str], video_id: str) -> list[str]:
    prefix = f"videos/{video_id}/"
    return sorted(key.removeprefix(prefix) for key in await store(s3_env).keys(prefix))


def scratch_files(topo: Topology) -> list[Path]:
    return sorted(p for p in topo.folder.glob("scratch-*/videos/**/*") if p.is_file())


async def test_uploads_are_processed_through_the_store_and_served_by_redirect(
    s3topo: Topology, s3_env: dict[str, str], clips: Clips
):
    topo = s3topo
    headers = topo.headers()
    async with (
        httpx.AsyncClient(base_url=topo.api_urls[0], timeout=60, headers=headers) as api1,
        httpx.AsyncClient(base_url=topo.public_urls[1], timeout=60, headers=headers) as front2,
        httpx.AsyncClient(timeout=60) as browser,
    ):
        ids = [
            await upload_id(api1, clip, f"clip-{i}{clip.suffix}")
            for i, clip in enumerate([clips.h264_aac, clips.vp9_opus])
        ]
        watchers = [Watcher(topo.ws_url(1), v, authorization=topo.authorization) for v in ids]
        await asyncio.wait_for(asyncio.gather(*(w.run() for w in watchers)), 180)
        for watcher in watchers:
            assert watcher.states[-1]["status"] == "DONE", watcher.states[-1]
        for video_id in ids:
            stored = await names(s3_env, video_id)
            for name in ("original", "video.mp4", "thumbnail.jpg", "metadata.json"):
                assert name in stored, stored
            # Through API 2's nginx (not the process that took the upload, not a worker).
            answer = await front2.get(f"/stream/{video_id}")
            assert answer.status_code == 302, answer.text
            media = await browser.get(answer.headers["location"])
            assert media.status_code == 200
            expected = await store(s3_env).read(f"videos/{video_id}/video.mp4")
            assert media.content == expected
        # Nothing stays in any process's scratch once the jobs are done.
        assert scratch_files(topo) == []

        deleted = await front2.post(
            "/graphql",
            json={"query": "mutation($id: ID!) { deleteVideo(id: $id) }",
                  "variables": {"id": ids[0]}},
        )  # fmt: skip
        assert deleted.json()["data"]["deleteVideo"] is True
        assert await names(s3_env, ids[0]) == []


async def test_a_resumable_upload_split_over_both_apis(
    s3topo: Topology, s3_env: dict[str, str], clips: Clips
):
    topo = s3topo
    data = clips.h264_aac.read_bytes()
    half = len(data) // 2
    headers = topo.headers()
    async with (
        httpx.AsyncClient(base_url=topo.api_urls[0], timeout=60, headers=headers) as api1,
        httpx.AsyncClient(base_url=topo.api_urls[1], timeout=60, headers=headers) as api2,
    ):
        filename = base64.b64encode(b"split.mp4").decode()
        created = await api1.post(
            "/uploads",
            headers={**TUS, "Upload-Length": str(len(data)),
                     "Upload-Metadata": f"filename {filename}"},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        video_id = created.headers["Clipo-Video-Id"]
        path = urlsplit(created.headers["Location"]).path
        first = await api1.patch(
            path, content=data[:half], headers={**TUS, **OCTETS, "Upload-Offset": "0"}
        )
        assert first.status_code == 204, first.text
        state = await api2.head(path, headers=TUS)
        assert state.headers["Upload-Offset"] == str(half)
        watcher = Watcher(topo.ws_url(0), video_id, authorization=topo.authorization)
        watching = asyncio.create_task(watcher.run(120))
        rest = await api2.patch(
            path, content=data[half:], headers={**TUS, **OCTETS, "Upload-Offset": str(half)}
        )
        assert rest.status_code == 204, rest.text
        await asyncio.wait_for(watching, 120)
        assert watcher.states[-1]["status"] == "DONE", watcher.states[-1]
        assert await store(s3_env).read(f"videos/{video_id}/original") == data
        assert not [n for n in await names(s3_env, video_id) if n.startswith("upload.tus")]
