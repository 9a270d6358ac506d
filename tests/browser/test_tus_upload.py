"""The frontend example's resumable uploads (tus-js-client against our tus server at
`/uploads`) in headless Chromium against a real `clipo-gql dev`: pause and resume, resume
after a page reload, and the server's refusals as readable messages.

The page is opened with `?tusChunk=<bytes>` (small chunks) and every PATCH is held back a
little by the test's request route, so that a pause lands mid-upload on any machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Error, Page, Request, Route, expect

from tests.browser.a11y import assert_accessible, progressbars
from tests.browser.test_frontend import (
    RECORD_STATUSES,
    TIMEOUT_MS,
    browser,
    open_page,
    row,
    statuses,
)
from tests.clips import Clips, make_clip
from tests.test_cli import DevServer, running_dev

__all__ = ["browser"]  # a fixture, used by name

UPLOAD_CAP = 64_000_000
CHUNK = 128 * 1024
PATCH_DELAY_SECONDS = 0.1

# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(240), pytest.mark.once_per_run]


@pytest.fixture(scope="module")
def tus_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running_dev(tmp_path_factory.mktemp("tus-dev"), MAX_UPLOAD_BYTES=str(UPLOAD_CAP)) as dev:
        yield dev


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 3 MB (some 25 chunks of 128 KiB); yuv444p is transcoded, so PROCESSING shows."""
    return make_clip(
        tmp_path_factory.mktemp("tus-clip") / "Long take.mp4",
        seconds=4, size="640x360", pix_fmt="yuv444p", extra=("-b:v", "6M"),
    )  # fmt: skip


def size_of(path: Path) -> int:
    return path.stat().st_size


class Traffic:
    """Every tus request the page sends (method, path, Upload-Offset), and a short hold on
    each PATCH so the upload lasts long enough to be paused."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        self.patches = 0
        self.cut: set[int] = set()  # which PATCHes (1-based) to fail as a network error

    def record(self, request: Request) -> None:
        path = httpx.URL(request.url).path
        if path.startswith("/uploads"):
            self.requests.append((request.method, path, request.headers.get("upload-offset")))

    async def hold(self, route: Route) -> None:
        if route.request.method == "PATCH":
            self.patches += 1
            if self.patches in self.cut:
                await route.abort("connectionreset")
                return
            await asyncio.sleep(PATCH_DELAY_SECONDS)
        with contextlib.suppress(Error):  # the page aborted it meanwhile (a pause)
            await route.continue_()

    def methods(self, since: int = 0) -> list[str]:
        return [method for method, _, _ in self.requests[since:]]


@pytest.fixture
async def tus_page(browser: Browser, tus_dev: DevServer) -> AsyncIterator[tuple[Page, Traffic]]:
    traffic = Traffic()
    async for page in open_page(browser, f"{tus_dev.url}/?tusChunk={CHUNK}", RECORD_STATUSES):
        page.on("request", traffic.record)
        await page.route("**/uploads/**", traffic.hold)
        yield page, traffic


async def head(dev: DevServer, video_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=dev.url) as http:
        return await http.head(f"/uploads/{video_id}", headers={"Tus-Resumable": "1.0.0"})


async def upload_then_pause(page: Page, clip: Path, at: float) -> str:
    """Pick `clip`, pause once `at` of it is sent; the upload's video id."""
    await page.set_input_files("#file-input", str(clip))
    upload = page.locator('#uploads li[data-kind="tus"]')
    await expect(upload).to_have_count(1)
    await page.wait_for_function(
        f"(document.querySelector('#uploads progress')?.value ?? 0) >= {at}"
    )
    await upload.locator("button.pause").click()
    await expect(upload.locator("button.pause")).to_have_text("Resume")
    video_id = await upload.get_attribute("data-video-id")
    assert video_id
    return video_id


async def settled_offset(dev: DevServer, video_id: str) -> int:
    """The offset once nothing more arrives (an aborted PATCH may still be landing)."""
    previous = -1
    while True:
        await asyncio.sleep(0.5)
        response = await head(dev, video_id)
        assert response.status_code == 200, response.text
        offset = int(response.headers["upload-offset"])
        if offset == previous:
            return offset
        previous = offset


async def test_upload_pause_and_resume(
    tus_page: tuple[Page, Traffic], tus_dev: DevServer, big_clip: Path
):
    page, traffic = tus_page
    size = size_of(big_clip)
    video_id = await upload_then_pause(page, big_clip, at=0.2)
    paused_at = len(traffic.requests)

    offset = await settled_offset(tus_dev, video_id)
    assert 0 < offset < size, (offset, size)
    await expect(row(page, video_id).locator(".badge")).to_have_text("UPLOADING")
    await asyncio.sleep(0.5)
    assert (await head(tus_dev, video_id)).headers["upload-offset"] == str(offset), "not paused"
    # What a screen reader is told: the upload's bar and its video's, with their values.
    bars = {bar.name: bar for bar in await progressbars(page)}
    for name in ("Uploading Long take.mp4", "Progress of Long take.mp4"):
        assert (bars[name].min, bars[name].max) == (0, 1), bars
        assert 0 < bars[name].value < 1, bars
    await expect(page.locator("#announcements")).to_contain_text("Long take.mp4: upload paused")
    await assert_accessible(page, "a paused upload")

    await page.locator("#uploads button.pause").click()
    await expect(row(page, video_id).locator(".badge")).to_have_text("DONE", timeout=TIMEOUT_MS)
    await expect(page.locator("#uploads li")).to_have_count(0)

    seen = await statuses(page, video_id)
    assert seen[0] == "UPLOADING", seen
    assert seen[-1] == "DONE", seen
    assert seen.index("PENDING") < seen.index("PROCESSING"), seen
    # Resumed where the server was: asked with HEAD, then PATCHes from that offset on.
    after = traffic.requests[paused_at:]
    assert after[0][0] == "HEAD", after
    patches = [int(o) for method, _, o in after if method == "PATCH" and o is not None]
    assert patches[0] == offset, (patches, offset)
    assert traffic.methods().count("POST") == 1
    assert traffic.methods().count("PATCH") >= size // CHUNK

    done = await head(tus_dev, video_id)
    assert done.headers["upload-offset"] == done.headers["upload-length"] == str(size)
    async with httpx.AsyncClient(base_url=tus_dev.url) as http:
        metrics = (await http.get("/metrics")).text
    received = next(
        float(line.split()[-1]) for line in metrics.splitlines()
        if line.startswith("clipo_tus_bytes_received_total")
    )  # fmt: skip
    assert received >= size
    # Finished uploads leave nothing in the fingerprint store.
    assert await page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tus::'))") == []


async def test_network_errors_are_retried(
    tus_page: tuple[Page, Traffic], tus_dev: DevServer, big_clip: Path
):
    page, traffic = tus_page
    traffic.cut = {3, 4}
    await page.set_input_files("#file-input", str(big_clip))
    upload = page.locator('#uploads li[data-kind="tus"]')
    await expect(upload).to_have_attribute("data-video-id", re.compile(r"\w+"))
    video_id = await upload.get_attribute("data-video-id")
    assert video_id
    await expect(row(page, video_id).locator(".badge")).to_have_text("DONE", timeout=TIMEOUT_MS)
    # Each cut PATCH was followed by a HEAD (where is the server?) and a PATCH from there.
    methods = [method for method in traffic.methods() if method != "POST"]
    assert methods[:7] == ["PATCH", "PATCH", "PATCH", "HEAD", "PATCH", "HEAD", "PATCH"], methods
    assert await page.locator("#messages li.error").count() == 0
    done = await head(tus_dev, video_id)
    assert done.headers["upload-offset"] == str(size_of(big_clip))


async def test_resume_after_a_page_reload(
    tus_page: tuple[Page, Traffic], tus_dev: DevServer, big_clip: Path
):
    page, traffic = tus_page
    size = size_of(big_clip)
    video_id = await upload_then_pause(page, big_clip, at=0.3)
    offset = await settled_offset(tus_dev, video_id)
    assert 0 < offset < size

    await page.reload()
    await page.wait_for_selector("body[data-ready]")
    reloaded = len(traffic.requests)
    # The page names the unfinished upload, and the list shows its video as UPLOADING.
    unfinished = page.locator(f'#resumable li[data-video-id="{video_id}"]')
    await expect(unfinished).to_contain_text("pick the file again")
    await expect(row(page, video_id).locator(".badge")).to_have_text("UPLOADING")
    await assert_accessible(page, "an unfinished upload after a reload")

    await page.set_input_files("#file-input", str(big_clip))
    await expect(page.locator('#uploads li[data-resumed="true"]')).to_have_count(1)
    await expect(unfinished).to_have_count(0)
    await expect(row(page, video_id).locator(".badge")).to_have_text("DONE", timeout=TIMEOUT_MS)

    after = traffic.requests[reloaded:]
    assert "POST" not in [method for method, _, _ in after], f"a new upload was made: {after}"
    assert after[0][:2] == ("HEAD", f"/uploads/{video_id}"), after
    first_patch = next(o for method, _, o in after if method == "PATCH")
    assert first_patch == str(offset), "bytes the server had were sent again"
    await expect(page.locator(f'#videos li[data-id="{video_id}"]')).to_have_count(1)
    done = await head(tus_dev, video_id)
    assert done.headers["upload-offset"] == str(size)


async def test_refusals_are_readable_and_leave_nothing(
    tus_page: tuple[Page, Traffic], tus_dev: DevServer, clips: Clips, tmp_path: Path
):
    page, traffic = tus_page
    messages = page.locator("#messages li")
    rows_before = await page.locator("#videos li").count()
    too_large = tmp_path / "too large.mp4"
    with too_large.open("wb") as fh:
        fh.truncate(UPLOAD_CAP + 1)

    await page.set_input_files("#file-input", [str(clips.not_video), str(too_large)])
    await expect(messages.filter(has_text="not_video.mp4: ")).to_contain_text(
        "does not look like a video"
    )
    await expect(messages.filter(has_text="too large.mp4: ")).to_contain_text("larger than")
    await expect(page.locator("#uploads li")).to_have_count(0)
    await expect(page.locator("#videos li")).to_have_count(rows_before)
    # The non-video was refused on its first PATCH (415), the big one at creation (413).
    assert traffic.methods().count("PATCH") == 1
    assert await page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tus::'))") == []


async def test_simple_multipart_upload_still_works(tus_page: tuple[Page, Traffic], clips: Clips):
    page, traffic = tus_page
    await page.check("#simple-upload")
    before = await page.locator("#videos li").count()
    await page.set_input_files("#file-input", str(clips.h264_aac))
    await expect(page.locator('#uploads li[data-kind="multipart"]')).to_have_count(0)
    await expect(page.locator("#videos li")).to_have_count(before + 1)
    video_id = await page.locator("#videos li").first.get_attribute("data-id")
    assert video_id
    await expect(row(page, video_id).locator(".badge")).to_have_text("DONE", timeout=TIMEOUT_MS)
    assert traffic.requests == [], "the simple upload went through tus"
