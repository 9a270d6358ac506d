"""The commands as a person runs them: real processes, real ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from clipo_gql.devredis import answers, free_port, private_redis

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clipo_gql.cli"]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URL", "REDIS_URL")}
    return {**env, **extra}


def wait_until_healthy(url: str, proc: subprocess.Popen[Any], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become healthy")


@dataclass
class DevServer:
    url: str
    proc: subprocess.Popen[bytes]
    media: Path
    prefix: str  # of its queue and channels in Redis


@contextlib.contextmanager
def running_dev(folder: Path, *, own_queue: bool = True, **settings: str) -> Iterator[DevServer]:
    """`clipo-gql dev` as a person runs it, on a free port, with its own media folder, queue
    and channels (and `settings` as environment); its output in folder/dev.log. Stopped with
    SIGINT, as Ctrl-C does. `own_queue=False` leaves QUEUE_NAME and REDIS_PREFIX unset."""
    port = free_port()
    prefix = f"clipo-test-{uuid.uuid4().hex[:12]}"
    queue = {"QUEUE_NAME": f"{prefix}:queue", "REDIS_PREFIX": prefix} if own_queue else {}
    env = environment(
        MEDIA_DIR=str(folder / "media"),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        **queue,
        **settings,
    )
    with (folder / "dev.log").open("wb") as log:
        proc = subprocess.Popen(
            [*CLI, "dev", "--port", str(port)], env=env, cwd=folder,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
        yield DevServer(url=url, proc=proc, media=folder / "media", prefix=prefix)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def upload(url: str, clip: Path) -> str:
    with clip.open("rb") as fh:
        response = httpx.post(
            f"{url}/graphql",
            data={
                "operations": '{"query": "mutation($f: Upload!) { uploadVideo(file: $f) '
                '{ id } }", "variables": {"f": null}}',
                "map": '{"0": ["variables.f"]}',
            },
            files={"0": ("clip.mp4", fh, "video/mp4")},
            headers={"apollo-require-preflight": "true"},
        )
    video_id: str = response.json()["data"]["uploadVideo"]["id"]
    return video_id


def final_state(url: str, video_id: str, seconds: float = 30) -> dict[str, Any]:
    """The video once DONE or FAILED, or as it is after `seconds`."""
    query = {"query": f'{{ video(id: "{video_id}") {{ status thumbnailUrl }} }}'}
    deadline = time.monotonic() + seconds
    while True:
        video: dict[str, Any] = httpx.post(f"{url}/graphql", json=query).json()["data"]["video"]
        if video["status"] in ("DONE", "FAILED") or time.monotonic() > deadline:
            return video
        time.sleep(0.1)


def test_dev_runs_api_and_worker_in_one_process(tmp_path: Path, clips: Any):
    with running_dev(tmp_path) as dev:
        url = dev.url
        assert httpx.get(f"{url}/readyz").json() == {"status": "ok"}
        # Offered per-message compression, the server declines: it cost CPU per subscriber.
        ws_url = url.replace("http://", "ws://") + "/graphql"
        with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
        video_id = upload(url, clips.h264_aac)
        video = final_state(url, video_id)
        assert video == {"status": "DONE", "thumbnailUrl": f"{url}/thumbnails/{video_id}.jpg"}
    assert dev.proc.returncode == 0
    assert "rebuilt from MEDIA_DIR at each start" in (tmp_path / "dev.log").read_text()


def video_state(url: str, video_id: str) -> dict[str, Any]:
    query = f'{{ video(id: "{video_id}") {{ id ownerId status filename duration streamUrl }} }}'
    video: dict[str, Any] = httpx.post(f"{url}/graphql", json={"query": query}).json()["data"][
        "video"
    ]
    return video


def test_dev_keeps_its_library_across_a_restart(tmp_path: Path, clips: Any):
    """On the stand-in the database lives in the process: at start, dev rebuilds it from
    MEDIA_DIR (reindex), so ids, owners, states and files survive a restart."""
    with running_dev(tmp_path) as dev:
        done_id = upload(dev.url, clips.h264_aac)
        failed_id = upload(dev.url, clips.truncated)
        assert final_state(dev.url, done_id)["status"] == "DONE"
        assert final_state(dev.url, failed_id)["status"] == "FAILED"
        before = {v: video_state(dev.url, v) for v in (done_id, failed_id)}
        stream = httpx.get(f"{dev.url}/stream/{done_id}").content
    with running_dev(tmp_path) as again:
        after = {
            v: {**video_state(again.url, v), "streamUrl": before[v]["streamUrl"]}
            for v in (done_id, failed_id)
        }
        assert after == before
        assert before[done_id]["ownerId"] == "anonymous"
        assert httpx.get(f"{again.url}/stream/{done_id}").content == stream
        thumbnail = httpx.get(f"{again.url}/thumbnails/{done_id}.jpg")
        assert thumbnail.status_code == 200
        assert thumbnail.content[:3] == b"\xff\xd8\xff"
        listed = httpx.post(
            f"{again.url}/graphql", json={"query": "{ videos { totalCount } }"}
        ).json()["data"]["videos"]
        assert listed == {"totalCount": 2}
    log = (tmp_path / "dev.log").read_text()
    assert "2 videos restored (1 DONE, 1 FAILED, 0 PENDING of which 0 queued)" in log


def test_two_dev_servers_on_one_redis_keep_their_own_jobs(tmp_path: Path, clips: Any):
    """On the stand-in each dev server's videos live in its process: on a shared queue one
    would take the other's jobs and drop them (no such video there)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_dev(tmp_path / "a", own_queue=False) as a,
        running_dev(tmp_path / "b", own_queue=False) as b,
    ):
        uploaded = [(dev, upload(dev.url, clips.h264_aac)) for _ in range(3) for dev in (a, b)]
        # Well within the 60 s after which a requeue pass would bring a dropped job back.
        finals = [final_state(dev.url, video_id, 20)["status"] for dev, video_id in uploaded]
        assert finals == ["DONE"] * 6
    queues = [
        line.split("jobs on the queue ")[1]
        for folder in ("a", "b")
        for line in (tmp_path / folder / "dev.log").read_text().splitlines()
        if "jobs on the queue " in line
    ]
    assert len(set(queues)) == 2, queues
    assert "clipo:queue" not in queues


@pytest.mark.parametrize("command", ["serve", "worker", "reindex"])
def test_production_processes_refuse_to_start_without_mongodb(tmp_path: Path, command: str):
    done = subprocess.run(
        [*CLI, command, "--port", str(free_port())] if command == "serve" else [*CLI, command],
        env=environment(
            MEDIA_DIR=str(tmp_path), REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        ),
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "MONGODB_URL is not set" in done.stdout + done.stderr


def test_private_redis_starts_and_stops():
    with private_redis() as url:
        assert answers(url)
    assert not answers(url)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_production_processes_refuse_to_start_without_auth_keys(tmp_path: Path, command: str):
    """AUTH_MODE defaults to required for serve and worker: no key, one clear line, no start."""
    done = subprocess.run(
        [*CLI, command],
        env=environment(MEDIA_DIR=str(tmp_path), MONGODB_URL="mongodb://127.0.0.1:1"),
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "AUTH_MODE=required needs a way to verify tokens" in lines[0]
    assert "Traceback" not in done.stderr


def test_token_prints_a_jwt_that_serve_accepts(tmp_path: Path):
    secret = "cli-secret-" + "c" * 32
    done = subprocess.run(
        [*CLI, "token", "--sub", "alice", "--admin", "--ttl", "120"],
        env=environment(AUTH_JWT_SECRET=secret), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["clipo:admin"]
    assert 100 <= claims["exp"] - time.time() <= 120
    missing = subprocess.run(
        [*CLI, "token", "--sub", "alice"], env=environment(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "AUTH_JWT_SECRET" in missing.stderr


def test_reindex_refuses_while_an_api_process_uses_the_media_dir(tmp_path: Path):
    """A live API process may be storing a video: reindex inserting its document first
    would make that upload fail. (The database is never reached: the port is closed.)"""
    from clipo_gql.storage import Storage

    storage = Storage(tmp_path / "media")
    storage.prepare()
    storage.claim_uploads()
    try:
        done = subprocess.run(
            [*CLI, "reindex"],
            env=environment(MEDIA_DIR=str(storage.root), MONGODB_URL="mongodb://127.0.0.1:1"),
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    finally:
        storage.release_uploads()
    assert done.returncode == 2
    assert "1 API process(es) use" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not os.environ.get("MONGODB_URL"), reason="needs a MongoDB server")
def test_reindex_command_on_a_real_server(tmp_path: Path):
    """The command as an operator runs it after losing the database: a summary, and a
    second run that keeps everything."""
    from bson import ObjectId

    from clipo_gql.storage import Storage

    storage = Storage(tmp_path / "media")
    storage.prepare()
    video_id = ObjectId()
    folder = storage.video_dir(video_id)
    folder.mkdir()
    (folder / "original").write_bytes(b"not really a video")
    record = {
        "format": 1, "id": str(video_id), "filename": "a.mp4", "owner_id": "erin",
        "source": "UPLOAD", "created_at": "2024-05-01T10:00:00Z", "status": "FAILED",
        "error": "Not a video",
    }  # fmt: skip
    (folder / "record.json").write_text(json.dumps(record))
    (storage.videos / "stray").mkdir()
    env = environment(
        MEDIA_DIR=str(storage.root),
        MONGODB_URL=os.environ["MONGODB_URL"],
        MONGODB_DATABASE=f"clipo_test_{uuid.uuid4().hex[:12]}",
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        QUEUE_NAME=f"clipo-test-{uuid.uuid4().hex[:12]}:queue",
    )
    try:
        first, second = (
            subprocess.run(
                [*CLI, "reindex"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )  # fmt: skip
            for _ in range(2)
        )
        assert first.returncode == 0, first.stderr
        assert "1 videos restored (0 DONE, 1 FAILED" in first.stdout, first.stdout
        assert f"left alone: {storage.videos / 'stray'}: not a video id" in first.stdout
        assert second.returncode == 0, second.stderr
        assert "0 videos restored" in second.stdout, second.stdout
        assert "1 kept" in second.stdout
    finally:
        from pymongo import MongoClient

        client: MongoClient[Any] = MongoClient(env["MONGODB_URL"])
        client.drop_database(env["MONGODB_DATABASE"])
        client.close()
