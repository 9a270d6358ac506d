"""The frontend example in a real browser (Debian's chromium, driven by Playwright) against a
real `clipo-gql dev` process: upload, live status, playback, errors, retry, delete, paging.

CLIPO_SCREENSHOT=path saves the screenshot somewhere lasting: README's picture is made so, by
`CLIPO_SCREENSHOT=frontend-example/screenshot.png uv run pytest tests/browser/test_frontend.py -k
test_upload_watch_live_and_play`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.browser.a11y import assert_accessible
from tests.clips import Clips, make_clip
from tests.test_cli import DevServer, running_dev

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
UPLOAD_CAP = 4_000_000
TIMEOUT_MS = 60_000

# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(180), pytest.mark.once_per_run]

# Records every status badge the list shows, so a test can tell that a row went through
# PROCESSING live (without a reload) rather than only reading its final state.
RECORD_STATUSES = """
window.__statuses = [];
window.__uploadRows = 0;
const lastStatus = {};
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    for (const badge of document.querySelectorAll("#videos .badge")) {
      const id = badge.closest("[data-id]").dataset.id;
      if (lastStatus[id] === badge.textContent) continue;
      lastStatus[id] = badge.textContent;
      window.__statuses.push(id + ":" + badge.textContent);
    }
  }).observe(document.getElementById("videos"), { childList: true, subtree: true });
  new MutationObserver((changes) => {
    for (const change of changes) window.__uploadRows += change.addedNodes.length;
  }).observe(document.getElementById("uploads"), { childList: true });
});
"""


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """`clipo-gql dev` as a person runs it (the frontend is served because it runs from the
    checkout), with a small upload cap so the too-large case needs no big file."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: ./scripts/test installs it (apt-get chromium)")
    with running_dev(tmp_path_factory.mktemp("dev"), MAX_UPLOAD_BYTES=str(UPLOAD_CAP)) as dev:
        yield dev


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )  # fmt: skip
        yield browser
        await browser.close()


async def upload_by_http(
    http: httpx.AsyncClient, clip: Path, filename: str | None = None, **headers: str
) -> str:
    """Upload as a script would (no browser); the new video's id."""
    with clip.open("rb") as fh:
        response = await http.post(
            "/graphql",
            data={
                "operations": '{"query": "mutation($f: Upload!) { uploadVideo(file: $f) '
                '{ id } }", "variables": {"f": null}}',
                "map": '{"0": ["variables.f"]}',
            },
            files={"0": (filename or clip.name, fh, "video/mp4")},
            headers={"apollo-require-preflight": "true", **headers},
        )
    body = response.json()
    assert "errors" not in body, body
    video_id: str = body["data"]["uploadVideo"]["id"]
    return video_id


async def open_page(
    browser: Browser, url: str, init_script: str | None = None
) -> AsyncIterator[Page]:
    """The app at `url`, once its first page of videos is listed; it must throw nothing."""
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if init_script:
        await page.add_init_script(init_script)
    await page.goto(url)
    await page.wait_for_selector("body[data-ready]")
    yield page
    await page.close()
    assert errors == [], "the page threw"


@pytest.fixture
async def page(browser: Browser, dev_server: DevServer) -> AsyncIterator[Page]:
    async for opened in open_page(browser, dev_server.url + "/", RECORD_STATUSES):
        yield opened


async def statuses(page: Page, video_id: str) -> list[str]:
    seen: list[str] = await page.evaluate("window.__statuses")
    return [entry.split(":", 1)[1] for entry in seen if entry.startswith(video_id + ":")]


async def upload_via_picker(page: Page, path: Path) -> str:
    """Uploads through the file input and returns the new row's video id."""
    before = await page.locator("#videos li").count()
    await page.set_input_files("#file-input", str(path))
    await expect(page.locator("#videos li")).to_have_count(before + 1)
    video_id = await page.locator("#videos li").first.get_attribute("data-id")
    assert video_id
    return video_id


def row(page: Page, video_id: str) -> Any:
    return page.locator(f'#videos li[data-id="{video_id}"]')


async def test_upload_watch_live_and_play(page: Page, dev_server: DevServer, tmp_path: Path):
    # yuv444p cannot be copied: the transcode lasts long enough to show PROCESSING progress.
    clip = make_clip(
        tmp_path / "Holiday in Lisbon.mp4", seconds=8, size="640x360", pix_fmt="yuv444p"
    )
    video_id = await upload_via_picker(page, clip)
    assert await page.evaluate("window.__uploadRows") == 1, "no upload progress row was shown"

    await expect(row(page, video_id).locator(".badge")).to_have_text("DONE")
    seen = await statuses(page, video_id)
    assert seen[0] in ("UPLOADING", "PENDING"), seen  # tus: the row exists from creation on
    assert seen[-1] == "DONE", seen
    assert "PROCESSING" in seen, f"the row never showed PROCESSING live: {seen}"
    assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
    await expect(row(page, video_id).locator("img.thumb")).to_be_visible()
    await expect(row(page, video_id).locator(".meta")).to_contain_text("00:00:08")

    await row(page, video_id).click()
    detail = page.locator("#detail")
    await expect(detail).to_be_visible()
    await expect(detail.locator("#detail-name")).to_have_text("Holiday in Lisbon.mp4")
    await expect(detail.locator("#detail-facts")).to_contain_text("640 × 360")
    await expect(detail.locator("#detail-facts")).to_contain_text("h264")

    player = page.locator("#player")
    await page.wait_for_function("document.getElementById('player').readyState >= 1")
    duration = await player.evaluate("v => v.duration")
    assert duration == pytest.approx(8, abs=0.1)
    assert await player.evaluate("v => [v.videoWidth, v.videoHeight]") == [640, 360]
    seeked = await player.evaluate(
        """v => new Promise(resolve => {
             v.addEventListener("seeked", () => resolve(v.currentTime), { once: true });
             v.currentTime = 6;
           })"""
    )
    assert seeked == pytest.approx(6, abs=0.5)

    for link, disposition in (("#download-video", "attachment"), ("#view-metadata", None)):
        href = await page.locator(link).get_attribute("href")
        assert href
        response = await page.request.get(href)
        assert response.status == 200
        if disposition:
            assert response.headers["content-disposition"].startswith("attachment")
            assert "Holiday" in response.headers["content-disposition"]
        else:
            assert (await response.json())["duration"] == pytest.approx(8, abs=0.1)

    # README's picture: 1280x800, a PNG of some 150 KB.
    await page.set_viewport_size({"width": 1280, "height": 800})
    screenshot = tmp_path / "frontend-example.png"
    await page.screenshot(path=str(screenshot))
    if target := os.environ.get("CLIPO_SCREENSHOT"):
        shutil.copyfile(screenshot, target)
    assert screenshot.stat().st_size > 10_000


async def test_api_errors_are_shown_as_readable_messages(
    page: Page, dev_server: DevServer, clips: Clips, tmp_path: Path
):
    messages = page.locator("#messages li")
    rows_before = await page.locator("#videos li").count()

    too_large = tmp_path / "too large.mp4"
    with too_large.open("wb") as fh:
        fh.write(clips.h264_aac.read_bytes())
        fh.truncate(UPLOAD_CAP + 1)
    # Two files picked at once: each gets its own upload and its own message.
    await page.set_input_files("#file-input", [str(too_large), str(clips.not_video)])
    await expect(messages.filter(has_text="too large.mp4: ")).to_contain_text("larger than")
    await expect(messages.filter(has_text="not_video.mp4: ")).to_contain_text(
        "does not look like a video"
    )

    # Dropped on the drop zone, as from a file manager.
    drop = await page.evaluate_handle(
        """() => {
             const data = new DataTransfer();
             data.items.add(new File(["%PDF-1.7 not a video"], "report.mp4"));
             return data;
           }"""
    )
    await page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
    await expect(messages.filter(has_text="report.mp4: ")).to_contain_text("not look like a video")

    await page.fill("#url-input", "http://169.254.169.254/latest/meta-data.mp4")
    await page.click("#url-form button")
    await expect(messages.last).to_contain_text("That URL was refused")
    # Said at once to screen readers too (the alert region keeps the last few), all of it
    # accessible.
    await expect(page.locator("#alerts")).to_contain_text("report.mp4: ")
    await expect(page.locator("#alerts")).to_contain_text("That URL was refused")
    await assert_accessible(page, "upload and URL errors")

    # Nothing was created by any of it.
    await expect(page.locator("#videos li")).to_have_count(rows_before)
    uploads = [p for p in (dev_server.media / "incoming").rglob("*") if p.is_file()]
    assert [p for p in uploads if p.suffix != ".lock"] == []


async def test_failed_video_can_be_retried_and_deleted(
    page: Page, dev_server: DevServer, clips: Clips
):
    page.on("dialog", lambda dialog: dialog.accept())
    video_id = await upload_via_picker(page, clips.truncated)
    await expect(row(page, video_id).locator(".badge")).to_have_text("FAILED")
    await row(page, video_id).click()
    await expect(page.locator("#detail-error")).to_be_visible()
    assert await page.locator("#detail-error").inner_text()
    await assert_accessible(page, "a failed video's detail view")

    await page.click("#retry")
    await page.wait_for_function(
        f"window.__statuses.filter(s => s === '{video_id}:FAILED').length === 2"
    )
    seen = await statuses(page, video_id)
    first_failure = seen.index("FAILED")
    assert seen[0] in ("UPLOADING", "PENDING"), seen  # tus: the row exists from creation on
    assert "PENDING" in seen[first_failure:], seen

    await page.click("#delete")
    await expect(row(page, video_id)).to_have_count(0)
    await expect(page.locator("#detail")).to_be_hidden()
    await expect(page.locator("#messages li.info")).to_contain_text("deleted")
    async with httpx.AsyncClient(base_url=dev_server.url) as http:
        body = await http.post(
            "/graphql", json={"query": f'{{ video(id: "{video_id}") {{ id }} }}'}
        )
    assert body.json() == {"data": {"video": None}}
    assert not (dev_server.media / "videos" / video_id).exists()


async def test_load_more_pages_through_the_list(page: Page, dev_server: DevServer, clips: Clips):
    async with httpx.AsyncClient(base_url=dev_server.url) as http:
        # 13 is one more than the page's page size.
        for n in range(13):
            await upload_by_http(http, clips.short, f"page-{n:02}.mp4")
        total = (await http.post("/graphql", json={"query": "{ videos { totalCount } }"})).json()
    total_count = total["data"]["videos"]["totalCount"]
    await page.reload()
    await page.wait_for_selector("body[data-ready]")
    names = page.locator("#videos li .name")
    await expect(names).to_have_count(12)
    await expect(names.first).to_have_text("page-12.mp4")
    await expect(page.locator("#total")).to_have_text(f"({total_count})")
    await assert_accessible(page, "a list with more to load")
    await page.click("#load-more")
    await expect(names).to_have_count(total_count)
    await expect(names.nth(12)).to_have_text("page-00.mp4")
    await expect(page.locator("#load-more")).to_be_hidden()


@pytest.fixture
def dev_without_packages(tmp_path: Path) -> Iterator[DevServer]:
    """The example app as a new user finds it after `uv run clipo-gql dev` without `npm ci`."""
    site = tmp_path / "site"
    shutil.copytree(
        Path(__file__).resolve().parents[2] / "frontend-example", site,
        ignore=shutil.ignore_patterns("node_modules"),
    )  # fmt: skip
    with running_dev(tmp_path, FRONTEND_DIR=str(site)) as dev:
        yield dev


async def test_without_its_npm_packages_the_page_says_how_to_install_them(
    browser: Browser, dev_without_packages: DevServer
):
    page = await browser.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    await page.goto(dev_without_packages.url + "/")
    notice = page.locator("#not-started")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text("npm ci")
    assert any("graphql-ws" in url for url in missing), missing
    await page.close()
