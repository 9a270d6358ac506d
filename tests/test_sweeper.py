"""sweeper.py: files of dead processes and of videos never stored go; nothing live is touched."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bson import ObjectId

from clipo_gql.models import Video, VideoSource, VideoStatus
from clipo_gql.storage import Storage
from clipo_gql.sweeper import sweep
from tests.conftest import Server

# A process that claims its upload folder, starts an upload, and waits to be killed.
CLAIMER = """
import sys, time
from pathlib import Path
from clipo_gql.storage import Storage
storage = Storage(Path(sys.argv[1]))
storage.prepare()
storage.claim_uploads()
(storage.uploads / "upload.part").write_bytes(b"half an upload")
print(storage.uploads.name, flush=True)
time.sleep(60)
"""


def make_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "original").write_bytes(b"bytes")


def old_id(seconds: float) -> ObjectId:
    return ObjectId.from_datetime(datetime.now(UTC) - timedelta(seconds=seconds))


async def test_uploads_of_a_killed_process_go_and_live_ones_stay(server: Server):
    media = server.settings.media_dir
    claimer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLAIMER, str(media), stdout=asyncio.subprocess.PIPE
    )
    assert claimer.stdout is not None
    dead = (await claimer.stdout.readline()).decode().strip()
    storage = Storage(media)
    # Alive: its folder is kept, and so is this server's own (held in this process).
    assert (await sweep(storage, 600)).uploads == 0
    assert (media / "incoming" / dead / "upload.part").exists()

    claimer.send_signal(signal.SIGKILL)
    await claimer.wait()
    assert (await sweep(storage, 600)).uploads == 1
    assert not (media / "incoming" / dead).exists()
    assert not (media / "incoming" / f"{dead}.lock").exists()
    own = [p.name for p in (media / "incoming").iterdir()]
    assert len(own) == 2, own  # the server's folder and its lock
    assert (await sweep(storage, 600)).uploads == 0


async def test_loose_incoming_files_go_after_the_grace(server: Server):
    incoming = server.settings.media_dir / "incoming"
    stale, fresh = incoming / "stale.part", incoming / "fresh.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert (await sweep(Storage(server.settings.media_dir), 600)).uploads == 1
    assert not stale.exists()
    assert fresh.exists()


async def test_folders_of_videos_never_stored_go_after_the_grace(server: Server):
    storage = Storage(server.settings.media_dir)
    stored = Video(
        id=old_id(3601), filename="kept.mp4", source=VideoSource.UPLOAD, status=VideoStatus.FAILED
    )
    await stored.insert()
    assert stored.id is not None
    orphan, young = old_id(3600), ObjectId()
    for name in (str(stored.id), str(orphan), str(young), "not-an-id"):
        make_folder(storage.videos / name)

    assert (await sweep(storage, 600)).videos == 1
    assert not storage.video_dir(orphan).exists()
    assert storage.original(stored.id).exists()
    assert storage.original(young).exists()  # may be being stored right now
    assert (storage.videos / "not-an-id").exists()


async def test_no_document_at_all_is_a_lost_database_and_nothing_goes(
    server: Server, caplog: pytest.LogCaptureFixture
):
    """A thousand crashed uploads are not what an empty collection beside old folders means:
    the database was lost, and those folders are what `clipo-gql reindex` restores."""
    storage = Storage(server.settings.media_dir)
    orphan = old_id(3600)
    make_folder(storage.video_dir(orphan))
    assert (await sweep(storage, 600)).videos == 0
    assert storage.original(orphan).exists()
    assert "run `clipo-gql reindex`" in caplog.text
