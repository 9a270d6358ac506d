"""The example app used with the keyboard alone and a screen reader's view of it, in headless
Chromium against a real `clipo-gql dev`: Tab to the file input and the URL form, upload, move
through the list, open a video, play, pause and seek, delete with a confirmation, every step
with a visible focus ring; what the live regions announce; the progress bars as a screen
reader gets them; reduced motion and dark mode. axe-core checks each state on the way
(tests/browser/a11y.py, which every view's browser test calls)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog, FilePayload, Page, expect

from tests.browser.a11y import assert_accessible, assert_focus_visible
from tests.browser.test_frontend import CHROMIUM, TIMEOUT_MS, browser, open_page
from tests.clips import Clips, make_clip
from tests.test_cli import DevServer, running_dev

# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(180), pytest.mark.once_per_run]
__all__ = ["browser"]  # the fixture, shared with test_frontend
PLAYER = "document.getElementById('player')"

# Everything the page puts in its two live regions, in order, as [region, text].
RECORD_ANNOUNCEMENTS = """
window.__announced = [];
document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["announcements", "alerts"]) {
    new MutationObserver((changes) => {
      for (const change of changes)
        for (const node of change.addedNodes) window.__announced.push([id, node.textContent]);
    }).observe(document.getElementById(id), { childList: true });
  }
});
"""


@pytest.fixture(scope="module")
def a11y_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """`clipo-gql dev` of its own, so that the first page shows the empty list."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: ./scripts/test installs it (apt-get chromium)")
    with running_dev(tmp_path_factory.mktemp("a11y-dev")) as dev:
        yield dev


@pytest.fixture
async def page(browser: Browser, a11y_dev: DevServer) -> AsyncIterator[Page]:
    async for opened in open_page(browser, a11y_dev.url + "/", RECORD_ANNOUNCEMENTS):
        yield opened


async def tab_to(page: Page, selector: str, *, key: str = "Tab", most: int = 25) -> list[str]:
    """Press `key` until the focus is on `selector`, checking the focus ring at every stop;
    the stops on the way."""
    stops = []
    for _ in range(most):
        await page.keyboard.press(key)
        stops.append(await assert_focus_visible(page))
        if await page.evaluate("s => document.activeElement.matches(s)", selector):
            return stops
    raise AssertionError(f"{key} never reached {selector}: {stops}")


async def focused(page: Page, selector: str) -> None:
    await expect(page.locator(selector)).to_be_focused()
    await assert_focus_visible(page)


async def settles_at(page: Page, seconds: float) -> None:
    """The player ends up (done seeking, paused) within half a second of `seconds`."""
    await page.wait_for_function(
        f"Math.abs({PLAYER}.currentTime - {seconds}) < 0.5 && !{PLAYER}.seeking && {PLAYER}.paused"
    )


async def announced(page: Page, region: str) -> list[str]:
    seen: list[list[str]] = await page.evaluate("window.__announced")
    return [text for where, text in seen if where == region]


async def test_the_keyboard_alone_uploads_plays_seeks_and_deletes(
    page: Page, tmp_path: Path, clips: Clips
):
    await expect(page.locator("#empty")).to_be_visible()
    await assert_accessible(page, "the empty list")

    # Tab reaches the file input (through the views' tabs); Space opens the file chooser.
    # yuv444p cannot be copied: the transcode reports progress while PROCESSING.
    clip = make_clip(tmp_path / "Keyboard take.mp4", seconds=8, size="640x360", pix_fmt="yuv444p")
    stops = await tab_to(page, "#file-input")
    assert stops[:3] == ["#nav-videos", "#nav-operations", "#nav-webhooks"], stops
    async with page.expect_file_chooser() as chooser:
        await page.keyboard.press("Space")
    await (await chooser.value).set_files([str(clip), str(clips.short)])
    rows = page.locator("#videos li")
    await expect(rows).to_have_count(2)
    for name in ("Keyboard take.mp4", "short.mp4"):
        await expect(rows.filter(has_text=name).locator(".badge")).to_have_text(
            "DONE", timeout=TIMEOUT_MS
        )
    await assert_accessible(page, "the list")

    # The URL form, by Tab from the file input; Enter submits it, the refusal is an alert.
    await tab_to(page, "#url-input")
    await page.keyboard.type("http://169.254.169.254/latest/meta-data.mp4")
    await page.keyboard.press("Enter")
    await expect(page.locator("#messages li.error")).to_contain_text("That URL was refused")
    await expect(page.locator("#alerts")).to_contain_text("That URL was refused")
    await focused(page, "#url-input")

    # The list: Tab onto its first link, then the arrow keys, Home and End.
    await tab_to(page, "#videos a.name")
    links = page.locator("#videos a.name")
    await expect(links.first).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await expect(links.nth(1)).to_be_focused()
    await assert_focus_visible(page)
    await page.keyboard.press("Home")
    await expect(links.first).to_be_focused()
    await page.keyboard.press("End")
    await expect(links.nth(1)).to_be_focused()
    await page.keyboard.press("ArrowUp")
    await expect(links.first).to_be_focused()
    # Down to the clip (the two uploads ran side by side: either may be listed first).
    names = await links.all_inner_texts()
    for _ in range(names.index("Keyboard take.mp4")):
        await page.keyboard.press("ArrowDown")
    await expect(page.locator("#videos a.name:focus")).to_have_text("Keyboard take.mp4")

    # Enter opens the video; the focus goes to its name in the detail view.
    await page.keyboard.press("Enter")
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#detail-name")).to_have_text("Keyboard take.mp4")
    await expect(page.locator("#detail-name")).to_be_focused()
    await page.wait_for_function(f"{PLAYER}.readyState >= 1")
    await assert_accessible(page, "the detail view with its player")

    # Space on the video plays and pauses it.
    await tab_to(page, "#player")
    await page.keyboard.press("Space")
    await page.wait_for_function(f"!{PLAYER}.paused && {PLAYER}.currentTime > 0")
    await page.keyboard.press("Space")
    await page.wait_for_function(f"{PLAYER}.paused")

    # The seek bar (past the native controls' buttons): arrows move 5 s, Home and End the ends.
    await tab_to(page, "#seek")
    seek = page.locator("#seek")
    await page.keyboard.press("Home")
    await settles_at(page, 0)
    await page.keyboard.press("ArrowRight")
    await settles_at(page, 5)
    await expect(seek).to_have_attribute("aria-valuetext", "0:05 of 0:08")
    await page.keyboard.press("ArrowLeft")
    await settles_at(page, 0)
    await page.keyboard.press("End")
    await settles_at(page, 8)
    await expect(seek).to_have_attribute("aria-valuetext", "0:08 of 0:08")

    # Delete asks first: dismissed, the video stays (and so does the focus); accepted, it goes.
    questions: list[str] = []

    async def answer(dialog: Dialog, accept: bool) -> None:
        questions.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    await tab_to(page, "#delete")
    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    await page.keyboard.press("Enter")
    await expect(page.locator("#detail")).to_be_visible()
    await focused(page, "#delete")
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    await page.keyboard.press("Enter")
    await expect(page.locator("#detail")).to_be_hidden()
    await expect(rows).to_have_count(1)
    assert len(questions) == 2, questions
    assert "Keyboard take.mp4" in questions[1], questions
    # The focus is not lost with the button: it goes to the list.
    await expect(page.locator("#library-title")).to_be_focused()
    await expect(page.locator("#announcements")).to_contain_text("Video deleted")

    # Escape closes the detail view and gives the focus back to the video's link.
    await tab_to(page, "#videos a.name")
    await page.keyboard.press("Enter")
    await expect(page.locator("#detail-name")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator("#detail")).to_be_hidden()
    await focused(page, "#videos a.name")


async def test_live_regions_announce_status_and_coarse_progress(page: Page, tmp_path: Path):
    await expect(page.locator("#announcements")).to_have_attribute("aria-live", "polite")
    await expect(page.locator("#alerts")).to_have_attribute("role", "alert")
    clip = make_clip(tmp_path / "Spoken.mp4", seconds=8, size="640x360", pix_fmt="yuv444p")
    await page.set_input_files("#file-input", str(clip))
    row = page.locator("#videos li").filter(has_text="Spoken.mp4")
    await expect(row.locator(".badge")).to_have_text("DONE", timeout=TIMEOUT_MS)
    await expect(page.locator("#announcements")).to_contain_text("Spoken.mp4: ready to play")

    said = await announced(page, "announcements")
    assert said[0] == "Uploading Spoken.mp4", said
    assert "Spoken.mp4: processing" in said, said
    # Progress in quarters at most: never every tick, never twice the same step.
    processing = [
        int(m[1]) for text in said if (m := re.fullmatch(r"Spoken\.mp4: processing, (\d+) %", text))
    ]
    assert len(processing) <= 4, said
    assert processing == sorted(set(processing)), said
    uploaded = [text for text in said if text.endswith("% uploaded")]
    assert len(uploaded) <= 3, said
    assert await announced(page, "alerts") == []

    # An upload error is said at once (the alert region), not after the rest.
    notes: FilePayload = {"name": "notes.mp4", "mimeType": "video/mp4", "buffer": b"no video"}
    await page.set_input_files("#file-input", files=[notes])
    await expect(page.locator("#alerts")).to_contain_text("notes.mp4: ")
    (alert,) = await announced(page, "alerts")
    assert "not look like a video" in alert, alert


async def test_reduced_motion_and_dark_mode_are_followed(page: Page):
    zone = page.locator("#dropzone")
    root = page.locator("html")
    await page.emulate_media(color_scheme="light", reduced_motion="no-preference")
    assert await zone.evaluate("e => getComputedStyle(e).transitionDuration") != "0s"
    light = await root.evaluate("e => getComputedStyle(e).backgroundColor")
    await page.emulate_media(color_scheme="dark", reduced_motion="reduce")
    assert await zone.evaluate("e => getComputedStyle(e).transitionDuration") == "0s"
    dark = await root.evaluate("e => getComputedStyle(e).backgroundColor")
    assert (light, dark) == ("rgb(246, 247, 249)", "rgb(18, 21, 28)")


async def test_every_status_badge_reads_in_both_schemes(page: Page):
    """PENDING and PROCESSING pass too quickly to be caught on a real row: rows of every
    status, made as app.js makes them, are checked by axe (one hovered, a darker tint)."""
    await page.evaluate(
        """() => {
          for (const status of ["UPLOADING", "PENDING", "PROCESSING", "DONE", "FAILED"]) {
            const row = document.createElement("li");
            row.className = "video";
            row.dataset.id = `badge-${status}`;
            row.innerHTML = `<div class="thumb placeholder"></div>
              <div class="text"><a class="name" href="#">${status}.mp4</a>
              <span class="meta">00:00:08</span></div>
              <span class="badge ${status.toLowerCase()}">${status}</span>`;
            document.getElementById("videos").prepend(row);
          }
        }"""
    )
    await page.hover('#videos [data-id="badge-PROCESSING"]')
    await assert_accessible(page, "every status badge")
