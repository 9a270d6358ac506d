"""compose.yaml's topology as separate processes (topology.py): 2 × api, 2 × worker, FerretDB,
Redis and one shared media folder, driven by real HTTP and websocket clients.

What only shows across processes: a worker picking up what another process stored, a
subscriber on the other API process, a worker killed mid-job with another to take over, an API
process or the database restarted under its clients, a delete racing another process's job.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from bson import ObjectId
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from clipo_gql.settings import Settings
from clipo_gql.tus.lock import lock_key
from tests.clips import Clips
from tests.hardening.test_crash_recovery import children
from tests.test_media import assert_gone
from tests.test_ops import QUEUE, samples, value
from tests.test_tus import held_patch
from tests.topology.clients import (
    OUTPUTS,
    Watcher,
    database,
    gql,
    protocol_for,
    upload,
    upload_id,
)
from tests.topology.topology import (
    COMPOSE_VARIABLES,
    Process,
    Topology,
    load_compose,
    media_files,
)
from tests.webhook_receiver import receiving

pytestmark = pytest.mark.timeout(300)

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}
MEDIA_ROUTES = ("/stream/{}", "/download/{}", "/metadata/{}", "/download/{}/metadata",
                "/thumbnails/{}.jpg")  # fmt: skip


def outputs_of(topo: Topology, video_id: str) -> list[str]:
    folder = topo.media / "videos" / video_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def processed(topo: Topology, video_id: str) -> bytes:
    return (topo.media / "videos" / video_id / "video.mp4").read_bytes()


def incoming(topo: Topology) -> list[Path]:
    """Upload bytes left in incoming/ (each API process's own folder and lock aside)."""
    return sorted(
        p for p in (topo.media / "incoming").rglob("*") if p.is_file() and p.suffix != ".lock"
    )


async def stored(topo: Topology, video_id: str) -> dict[str, Any] | None:
    client, videos = database(topo.mongodb_url, topo.database)
    try:
        document: dict[str, Any] | None = await videos.find_one({"_id": ObjectId(video_id)})
        return document
    finally:
        client.close()


async def transcoder_of(topo: Topology, seconds: float = 60) -> tuple[Process, int]:
    """The worker that runs libx264 now, and that ffmpeg's pid."""
    for _ in range(int(seconds / 0.05)):
        for worker in topo.workers:
            if worker.alive:
                for pid, cmdline in children(worker.pid):
                    if "libx264" in cmdline:
                        return worker, pid
        await asyncio.sleep(0.05)
    raise AssertionError("no worker started transcoding")


async def wait_for_status(http: httpx.AsyncClient, video_id: str, status: str) -> None:
    query = "query($id: ID!) { video(id: $id) { status } }"
    for _ in range(1200):
        data = (await gql(http, query, id=video_id)).get("data") or {}
        if (data.get("video") or {}).get("status") == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{video_id} never became {status}")


async def jobs_done(topo: Topology) -> tuple[int, float]:
    """The jobs both workers ended DONE, as `queue` (for an admin) and as each worker's own
    /metrics (with compose's METRICS_TOKEN) count them; both workers must be in each."""
    admin = {"Authorization": f"Bearer {topo.token('ops', admin=True)}"}
    async with httpx.AsyncClient(base_url=topo.api_urls[0], timeout=30, headers=admin) as api:
        # A worker reports a job's end right after storing DONE: a moment after watchers saw it.
        for _ in range(100):
            queue = (await api.post("/graphql", json={"query": QUEUE})).json()["data"]["queue"]
            if queue["running"] == 0:
                break
            await asyncio.sleep(0.05)
    assert queue["queued"] == queue["running"] == 0, queue
    assert sorted(w["pid"] for w in queue["workers"]) == sorted(w.pid for w in topo.workers)
    scraped = 0.0
    token = {"Authorization": f"Bearer {COMPOSE_VARIABLES['METRICS_TOKEN']}"}
    async with httpx.AsyncClient(timeout=30, headers=token) as http:
        for worker in topo.workers:
            url = f"http://127.0.0.1:{worker.env['WORKER_METRICS_PORT']}/metrics"
            scrape = await http.get(url)
            assert scrape.status_code == 200, scrape.text
            scraped += value(samples(scrape.text), "clipo_jobs_total", outcome="done")
            assert (
                await http.get(url, headers={"Authorization": "Bearer nope"})
            ).status_code == 401
    return sum(w["jobsDone"] for w in queue["workers"]), scraped


async def until_lock(redis: Redis, key: str, *, held: bool) -> None:
    """Until the upload's Redis lock is held, or free again."""
    for _ in range(400):
        if bool(await redis.exists(key)) is held:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{key} never {'held' if held else 'released'}")


def test_the_processes_get_compose_wiring(topology: Topology):
    compose = load_compose()["services"]
    api, worker = topology.apis[0], topology.workers[0]
    assert api.argv[1:] == ["serve", "--host", "127.0.0.1", "--port", topology.api_urls[0][-5:]]
    assert compose["api"]["command"][:2] == ["clipo-gql", "serve"]
    assert worker.argv[1:] == compose["worker"]["command"][1:]
    for process in topology.apps:
        assert process.env["MONGODB_URL"] == topology.mongodb_url
        assert process.env["REDIS_URL"] == topology.redis_url
        assert process.env["MEDIA_DIR"] == str(topology.media)
        assert (
            process.env["MONGODB_DATABASE"] == compose["worker"]["environment"]["MONGODB_DATABASE"]
        )
    # Clients reach api1 through nginx1: its URLs name nginx, which sends the media bytes.
    assert api.env["PUBLIC_BASE_URL"] == topology.public_urls[0]
    assert (
        api.env["ACCEL_REDIRECT_PREFIX"] == compose["api"]["environment"]["ACCEL_REDIRECT_PREFIX"]
    )
    conf = (topology.folder / "nginx1" / "nginx.conf").read_text()
    assert f"server {topology.api_urls[0].removeprefix('http://')};" in conf
    assert f"alias {topology.media}/;" in conf
    assert f"listen {topology.public_urls[0].removeprefix('http://')};" in conf
    assert "--appendonly" in topology.redis.argv


async def test_uploads_over_both_apis_are_done_once_and_served_by_both(
    topo: Topology, clips: Clips
):
    inputs = [clips.h264_aac, clips.vp9_opus, clips.odd_size, clips.h264_noaudio, clips.rotated]
    remuxed_inputs = {clips.h264_aac, clips.h264_noaudio, clips.rotated}
    before = await jobs_done(topo)
    apis = [
        httpx.AsyncClient(base_url=url, timeout=60, headers=topo.headers()) for url in topo.api_urls
    ]
    fronts = [
        httpx.AsyncClient(base_url=url, timeout=60, headers=topo.headers())
        for url in topo.public_urls
    ]
    try:
        ids = await asyncio.gather(
            *(
                upload_id(
                    apis[i % 2],
                    inputs[i % len(inputs)],
                    f"clip-{i}{inputs[i % len(inputs)].suffix}",
                )
                for i in range(20)
            )
        )
        # Two subscribers per video: one on the other API process, one on the same.
        watchers = [
            Watcher(topo.ws_url((i + k) % 2), video_id, protocol_for(i + k), topo.authorization)
            for i, video_id in enumerate(ids)
            for k in (1, 0)
        ]
        await asyncio.wait_for(asyncio.gather(*(w.run() for w in watchers)), 240)
        for watcher in watchers:
            statuses = [s["status"] for s in watcher.states]
            assert statuses.count("DONE") == 1, (watcher.video_id, statuses)
            assert statuses[-1] == "DONE", watcher.states[-1]
            assert watcher.connections == 1, watcher.errors

        for i, video_id in enumerate(ids):
            assert outputs_of(topo, video_id) == OUTPUTS
            document = await stored(topo, video_id)
            assert document is not None
            # One worker processed it, once (a second delivery would count another attempt).
            assert document["attempts"] == 1, document
            assert document["remuxed"] is (inputs[i % len(inputs)] in remuxed_inputs)
            answers = [await front.get(f"/stream/{video_id}") for front in fronts]
            assert [a.status_code for a in answers] == [200, 200]
            assert answers[0].headers["etag"] == answers[1].headers["etag"]
            assert answers[0].content == answers[1].content == processed(topo, video_id)
            thumbs = [await front.get(f"/thumbnails/{video_id}.jpg") for front in fronts]
            assert [t.status_code for t in thumbs] == [200, 200]
        assert incoming(topo) == []
        monitored, scraped = await jobs_done(topo)
        assert (monitored - before[0], scraped - before[1]) == (len(ids), len(ids))
    finally:
        for api in [*apis, *fronts]:
            await api.aclose()


async def test_a_worker_killed_mid_transcode_leaves_its_video_to_the_other(
    topo: Topology, long_clip: Path
):
    async with httpx.AsyncClient(
        base_url=topo.api_urls[0], timeout=60, headers=topo.headers()
    ) as api:
        video_id = await upload_id(api, long_clip, "long.mp4")
        watcher = Watcher(topo.ws_url(1), video_id, authorization=topo.authorization)
        watching = asyncio.create_task(watcher.run(180))
        victim, ffmpeg = await transcoder_of(topo)
        victim.kill(signal.SIGKILL)
        await assert_gone([ffmpeg])  # it dies with its worker (PR_SET_PDEATHSIG)
        survivor = next(w for w in topo.workers if w is not victim)
        assert survivor.alive
        await asyncio.wait_for(watching, 180)

    assert watcher.final_status == "DONE", watcher.states
    assert [s["status"] for s in watcher.states].count("DONE") == 1
    document = await stored(topo, video_id)
    assert document is not None
    assert document["attempts"] == 2, document
    assert outputs_of(topo, video_id) == OUTPUTS
    assert [p.name for p in media_files(topo) if p.name.endswith(".part")] == []
    assert incoming(topo) == []


async def test_subscribers_of_a_restarted_api_get_the_current_and_final_state(
    topo: Topology, long_clip: Path
):
    async with httpx.AsyncClient(
        base_url=topo.api_urls[1], timeout=60, headers=topo.headers()
    ) as api:
        video_id = await upload_id(api, long_clip, "long.mp4")
        watchers = [
            Watcher(topo.ws_url(0), video_id, protocol_for(i), authorization=topo.authorization)
            for i in range(6)
        ]
        watching = asyncio.gather(*(w.run(180) for w in watchers))
        await wait_for_status(api, video_id, "PROCESSING")
        # Every subscriber has its first state before the process goes.
        for _ in range(400):
            if all(w.states for w in watchers):
                break
            await asyncio.sleep(0.05)
        seen_before = [len(w.states) for w in watchers]
        assert all(seen_before)
        topo.apis[0].kill(signal.SIGKILL)
        topo.apis[0].start()
        await asyncio.wait_for(watching, 180)

    for watcher, before in zip(watchers, seen_before, strict=True):
        assert watcher.connections >= 2, (watcher.connections, watcher.errors)
        after = watcher.states[before:]
        assert after, "nothing after reconnecting"
        # The first state after reconnecting is the current one, then on to the end.
        assert after[0]["status"] in ("PROCESSING", "DONE")
        assert after[-1]["status"] == "DONE"
        progress = [s["progress"] for s in watcher.states if s["status"] == "PROCESSING"]
        assert progress == sorted(progress)


async def test_a_database_restart_fails_uploads_cleanly_and_queued_work_finishes(
    topo: Topology, long_clip: Path, clips: Clips
):
    apis = [
        httpx.AsyncClient(base_url=url, timeout=60, headers=topo.headers()) for url in topo.api_urls
    ]
    try:
        queued = [await upload_id(apis[i % 2], long_clip, f"long-{i}.mp4") for i in range(3)]
        await transcoder_of(topo)
        files_before = set(media_files(topo))

        topo.mongo.kill(signal.SIGKILL)
        refused = await asyncio.gather(*(upload(api, clips.h264_aac, "during.mp4") for api in apis))
        for body in refused:
            error = body["errors"][0]
            assert error["extensions"]["code"] == "INTERNAL", body
            assert "try again" in error["message"], body
            assert body.get("data") is None, body
        route = await apis[1].get(f"/stream/{queued[0]}")
        assert route.status_code == 503, route.text
        assert "try again" in route.json()["error"]
        query = await gql(apis[0], "query($id: ID!) { video(id: $id) { id } }", id=queued[0])
        assert "database is unavailable" in query["errors"][0]["message"], query
        # Nothing of the refused uploads was kept.
        assert incoming(topo) == []
        new_files = {
            p for p in set(media_files(topo)) - files_before if p.parent.name not in queued
        }
        assert new_files == set()

        topo.mongo.start()
        watchers = [
            Watcher(topo.ws_url(i % 2), video_id, authorization=topo.authorization)
            for i, video_id in enumerate(queued)
        ]
        await asyncio.wait_for(asyncio.gather(*(w.run(240) for w in watchers)), 240)
        for watcher in watchers:
            assert watcher.final_status == "DONE", watcher.states
            assert outputs_of(topo, watcher.video_id) == OUTPUTS
        client, videos = database(topo.mongodb_url, topo.database)
        try:
            names = [d["filename"] async for d in videos.find({}, {"filename": 1})]
        finally:
            client.close()
        assert "during.mp4" not in names
        assert all(w.alive for w in topo.apps), "an app process died with the database"
    finally:
        for api in apis:
            await api.aclose()


async def test_delete_through_one_api_cancels_the_job_and_the_other_api_forgets_it(
    topo: Topology, long_clip: Path, clips: Clips
):
    api1 = httpx.AsyncClient(base_url=topo.api_urls[0], timeout=60, headers=topo.headers())
    api2 = httpx.AsyncClient(base_url=topo.api_urls[1], timeout=60, headers=topo.headers())
    try:
        # Being processed: the delete cancels the job and its ffmpeg.
        video_id = await upload_id(api2, long_clip, "long.mp4")
        _, ffmpeg = await transcoder_of(topo)
        deleted = await gql(api1, "mutation($id: ID!) { deleteVideo(id: $id) }", id=video_id)
        assert deleted == {"data": {"deleteVideo": True}}
        await assert_gone([ffmpeg])
        for _ in range(100):
            if not (topo.media / "videos" / video_id).exists():
                break
            await asyncio.sleep(0.05)
        assert outputs_of(topo, video_id) == []
        for route in MEDIA_ROUTES:
            assert (await api2.get(route.format(video_id))).status_code == 404, route
        video = await gql(api2, "query($id: ID!) { video(id: $id) { id } }", id=video_id)
        assert video == {"data": {"video": None}}

        # DONE and already served (so remembered) by API 2: a delete through API 1 still ends it.
        done_id = await upload_id(api2, clips.h264_aac, "short.mp4")
        watcher = Watcher(topo.ws_url(1), done_id, authorization=topo.authorization)
        await asyncio.wait_for(watcher.run(), 60)
        async with httpx.AsyncClient(base_url=topo.public_urls[1], headers=topo.headers()) as front:
            served = await front.get(f"/stream/{done_id}")
        assert (served.status_code, served.content) == (200, processed(topo, done_id))
        deleted = await gql(api1, "mutation($id: ID!) { deleteVideo(id: $id) }", id=done_id)
        assert deleted == {"data": {"deleteVideo": True}}
        for route in MEDIA_ROUTES:
            assert (await api2.get(route.format(done_id))).status_code == 404, route
        assert outputs_of(topo, done_id) == []
        await asyncio.sleep(1)  # a cancelled job's clean-up, if any, has run
        left = set(os.listdir(topo.media / "videos"))
        assert not left & {video_id, done_id}, left
    finally:
        await api1.aclose()
        await api2.aclose()


async def test_an_upload_cut_on_one_api_is_resumed_on_the_other_and_done_once(
    topo: Topology, clips: Clips
):
    data = clips.h264_aac.read_bytes()
    half = len(data) // 2
    before = await jobs_done(topo)
    api1 = httpx.AsyncClient(base_url=topo.api_urls[0], timeout=60, headers=topo.headers())
    api2 = httpx.AsyncClient(base_url=topo.api_urls[1], timeout=60, headers=topo.headers())
    redis = Redis.from_url(topo.redis_url)
    watching: asyncio.Task[None] | None = None
    try:
        filename = base64.b64encode(b"resumed.mp4").decode()
        created = await api1.post(
            "/uploads",
            headers={
                **TUS,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": f"filename {filename}",
            },
        )
        assert created.status_code == 201, created.text
        video_id = created.headers["Clipo-Video-Id"]
        path = urlsplit(created.headers["Location"]).path
        assert path == f"/uploads/{video_id}"
        watcher = Watcher(topo.ws_url(1), video_id, authorization=topo.authorization)
        watching = asyncio.create_task(watcher.run(120))

        # API 1 receives the first half of the body, and holds the upload waiting for more.
        writer = await held_patch(
            topo.api_urls[0], path, 0, len(data), data[:half], topo.authorization
        )
        prefix = topo.apis[0].env.get("REDIS_PREFIX", Settings.model_fields["redis_prefix"].default)
        key = lock_key(prefix, ObjectId(video_id))
        await until_lock(redis, key, held=True)
        # Meanwhile a PATCH through the other process is refused: the lock is in Redis.
        other = await api2.patch(
            path, content=data, headers={**TUS, **OCTETS, "Upload-Offset": "0"}
        )
        assert other.status_code in (409, 423), other.text
        assert "error" in other.json()
        await asyncio.sleep(0.3)  # API 1 reads what was sent
        writer.transport.abort()  # the connection dies mid-PATCH
        await until_lock(redis, key, held=False)  # API 1 stored what arrived and let go

        # API 2 tells where API 1 left it, and takes the rest from there.
        state = await api2.head(path, headers=TUS)
        assert state.status_code == 200, state.text
        assert state.headers["Upload-Length"] == str(len(data))
        offset = int(state.headers["Upload-Offset"])
        assert 0 < offset <= half, (offset, half)
        document = await stored(topo, video_id)
        assert document is not None
        assert (document["status"], document["upload_offset"]) == ("UPLOADING", offset), document
        rest = await api2.patch(
            path, content=data[offset:], headers={**TUS, **OCTETS, "Upload-Offset": str(offset)}
        )
        assert rest.status_code == 204, rest.text
        assert rest.headers["Upload-Offset"] == str(len(data))
        await asyncio.wait_for(watching, 120)

        statuses = [s["status"] for s in watcher.states]
        assert statuses.count("DONE") == 1, watcher.states
        assert statuses[-1] == "DONE", watcher.states
        assert outputs_of(topo, video_id) == OUTPUTS
        assert (topo.media / "videos" / video_id / "original").read_bytes() == data
        document = await stored(topo, video_id)
        assert document is not None
        assert (document["filename"], document["attempts"]) == ("resumed.mp4", 1), document
        answers = []
        for url in topo.public_urls:
            async with httpx.AsyncClient(base_url=url, headers=topo.headers()) as front:
                answers.append(await front.get(f"/stream/{video_id}"))
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].headers["etag"] == answers[1].headers["etag"]
        assert answers[0].content == answers[1].content == processed(topo, video_id)
        # Completed again through either API: nothing more is queued.
        for api in (api1, api2):
            again = await api.patch(
                path, content=b"", headers={**TUS, **OCTETS, "Upload-Offset": str(len(data))}
            )
            assert again.status_code == 204, again.text
        monitored, scraped = await jobs_done(topo)
        assert (monitored - before[0], scraped - before[1]) == (1, 1)
        assert incoming(topo) == []
    finally:
        if watching is not None:
            watching.cancel()
        await api1.aclose()
        await api2.aclose()
        await redis.aclose()


CREATE_ENDPOINT = """mutation($url: String!) {
  createWebhookEndpoint(url: $url, events: [VIDEO_CREATED, VIDEO_READY]) { secret endpoint { id } }
}"""


async def test_webhooks_are_sent_by_the_worker_processes_and_verified(topo: Topology, clips: Clips):
    """The endpoint made through one API, the video through the other, `video.ready` sent by
    whichever worker process finished it, each event once, signed with the secret shown."""
    headers = topo.headers()
    async with (
        receiving() as receiver,
        httpx.AsyncClient(base_url=topo.api_urls[1], timeout=60, headers=headers) as second,
        httpx.AsyncClient(base_url=topo.api_urls[0], timeout=60, headers=headers) as first,
    ):
        created = await gql(second, CREATE_ENDPOINT, url=receiver.url)
        made = created["data"]["createWebhookEndpoint"]
        video_id = await upload_id(first, clips.h264_aac, "hooked.mp4")
        try:
            requests = await receiver.wait_for(2, within=60)
        except TimeoutError:
            raise AssertionError([(p.name, p.tail(60)) for p in topo.apps]) from None
        events = [Webhook(made["secret"]).verify(r.body, r.headers) for r in requests]
        assert sorted(e["type"] for e in events) == ["video.created", "video.ready"]
        assert {e["data"]["video"]["id"] for e in events} == {video_id}
        ready = next(e for e in events if e["type"] == "video.ready")["data"]["video"]
        # The absolute URLs (the origin the endpoint was created through) work, signed.
        assert f"/stream/{video_id}?token=" in ready["streamUrl"]
        async with httpx.AsyncClient(timeout=60) as anyone:
            stream = await anyone.get(ready["streamUrl"])
        assert stream.status_code == 200
        query = "query($id: ID!) { webhookDeliveries(endpointId: $id) { status attempts } }"
        for _ in range(100):
            log = (await gql(first, query, id=made["endpoint"]["id"]))["data"]["webhookDeliveries"]
            if [d["status"] for d in log] == ["DELIVERED", "DELIVERED"]:
                break
            await asyncio.sleep(0.05)
        assert log == [{"status": "DELIVERED", "attempts": 1}] * 2
        await asyncio.sleep(1.0)
        assert len(receiver.received) == 2
