"""The example app's adaptive player (frontend-example/player.js) in headless Chromium against
a real `clipo-gql dev`, with one real clip: it plays the HLS ladder through hls.js once
`hlsUrl` is published, switches rungs from the quality menu, and previews storyboard tiles
over its seek bar. One server and one upload for the module: the suite is near its budget."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.test_frontend import browser, open_page
from tests.clips import make_clip
from tests.test_cli import DevServer, running_dev, upload

# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(180), pytest.mark.once_per_run]
__all__ = ["browser"]  # the fixture, shared with test_frontend

# Processing (the MP4, the ladder, the storyboard) on a busy 2-core machine.
LADDER_MS = 150_000
PLAYER = "document.getElementById('player')"

# Every engine the <video> was given, in order: tells a reload apart from a steady source.
RECORD_ENGINES = """
window.__engines = [];
document.addEventListener("DOMContentLoaded", () => {
  const video = document.getElementById("player");
  new MutationObserver(() => {
    const engine = video.dataset.engine;
    if (engine && engine !== window.__engines.at(-1)) window.__engines.push(engine);
  }).observe(video, { attributes: true, attributeFilter: ["data-engine", "data-source"] });
});
"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    # Two rungs from a 640x360 clip (the default ladder starts at 360p), so there is a switch.
    with running_dev(tmp_path_factory.mktemp("player-dev"), HLS_RENDITIONS="360,240") as server:
        yield server


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Small enough for a short ladder, long enough for several segments and storyboard tiles.
    return make_clip(tmp_path_factory.mktemp("player-clip") / "ladder.mp4", seconds=8,
                     size="640x360")  # fmt: skip


@pytest.fixture(scope="module")
def video_id(dev: DevServer, clip: Path) -> str:
    # Uploaded, not waited for: the first test opens the page while it is still processing.
    return upload(dev.url, clip)


async def opened(browser: Browser, dev: DevServer, video_id: str) -> AsyncIterator[Page]:
    """The detail view of the clip, once it plays through hls.js."""
    async for page in open_page(browser, f"{dev.url}/#{video_id}", RECORD_ENGINES):
        await expect(page.locator("#player")).to_have_attribute(
            "data-engine", "hls", timeout=LADDER_MS
        )
        await page.wait_for_function(f"{PLAYER}.readyState >= 1")
        yield page


async def play_muted(page: Page) -> None:
    """Start playback from the test, muted (so headless Chromium allows it without a click)."""
    await page.evaluate(f"(v => {{ v.muted = true; return v.play() }})({PLAYER})")


async def advances(page: Page, seconds: float = 1.0) -> None:
    """Playback goes on: the clock and the pictures (a video stuck on one frame while the sound
    plays moves the clock alone)."""
    frames = f"{PLAYER}.getVideoPlaybackQuality().totalVideoFrames"
    start, decoded = await page.evaluate(f"[{PLAYER}.currentTime, {frames}]")
    await page.wait_for_function(f"{PLAYER}.currentTime > {start + seconds}")
    assert await page.evaluate(frames) >= decoded + 10 * seconds


async def test_the_detail_view_plays_the_ladder_through_hls_js(
    browser: Browser, dev: DevServer, video_id: str
):
    async for page in opened(browser, dev, video_id):
        source = await page.locator("#player").get_attribute("data-source")
        assert source == f"{dev.url}/hls/{video_id}/master.m3u8"
        assert await page.evaluate("window.__clipoPlayer.hls.url") == source
        await expect(page.locator("#quality-box")).to_be_visible()
        await play_muted(page)
        await advances(page)
        # The status updates that follow (storyboard, DONE) load nothing new: one HLS load,
        # after the MP4 if the page saw the video before its ladder was ready.
        await expect(page.locator("#detail-status")).to_have_text("DONE", timeout=LADDER_MS)
        engines = await page.evaluate("window.__engines")
        assert engines in (["hls"], ["mp4", "hls"]), engines
        assert await page.evaluate(f"{PLAYER}.paused") is False


async def test_the_quality_menu_switches_the_rung(browser: Browser, dev: DevServer, video_id: str):
    async for page in opened(browser, dev, video_id):
        await play_muted(page)
        await page.wait_for_function(f"{PLAYER}.dataset.level !== undefined")
        levels = await page.evaluate("window.__clipoPlayer.hls.levels.map(l => l.height)")
        assert len(levels) >= 2, levels
        options = await page.locator("#quality option").evaluate_all(
            "options => options.map(o => [o.value, o.textContent])"
        )
        assert options[0][0] == "-1"
        assert options[0][1].startswith("Auto")
        assert [int(value) for value, _ in options[1:]] == sorted(
            range(len(levels)), key=lambda i: -levels[i]
        )
        assert all(re.fullmatch(r"\d+p · [\d.]+ [kM]bps", label) for _, label in options[1:])

        playing = int(await page.locator("#player").get_attribute("data-level") or "-1")
        other = next(i for i in range(len(levels)) if i != playing)
        await page.select_option("#quality", str(other))
        await page.wait_for_function(
            f"window.__clipoPlayer.hls.currentLevel === {other}"
            f" && {PLAYER}.dataset.level === '{other}'"
        )
        await advances(page)
        assert await page.evaluate(f"{PLAYER}.videoHeight") == levels[other]

        await page.select_option("#quality", "-1")
        assert await page.evaluate("window.__clipoPlayer.hls.autoLevelEnabled") is True


def storyboard_cues(vtt: str, vtt_url: str) -> list[tuple[float, float, str, list[int]]]:
    """(start, end, sprite URL, [x, y, w, h]) per cue, as the spec of the VTT says."""

    def seconds(stamp: str) -> float:
        total = 0.0
        for part in stamp.split(":"):
            total = total * 60 + float(part)
        return total

    cues = []
    for timing, text in re.findall(r"^(\S+ --> \S+)[^\n]*\n(\S+)", vtt, re.MULTILINE):
        start, end = (seconds(side) for side in timing.split(" --> "))
        url, fragment = urldefrag(urljoin(vtt_url, text))
        x, y, w, h = (int(n) for n in fragment.removeprefix("xywh=").split(","))
        cues.append((start, end, url, [x, y, w, h]))
    return cues


async def test_hovering_the_seek_bar_previews_the_storyboard_tile(
    browser: Browser, dev: DevServer, video_id: str
):
    async for page in opened(browser, dev, video_id):
        async with httpx.AsyncClient(base_url=dev.url) as http:
            query = f'{{ video(id: "{video_id}") {{ storyboardUrl }} }}'
            answer = (await http.post("/graphql", json={"query": query})).json()
            vtt_url = answer["data"]["video"]["storyboardUrl"]
            assert vtt_url == f"{dev.url}/storyboard/{video_id}/storyboard.vtt"
            vtt = (await http.get(vtt_url)).text
        assert vtt.startswith("WEBVTT")
        cues = storyboard_cues(vtt, vtt_url)
        assert len(cues) >= 2, vtt

        seek = page.locator("#seek")
        await expect(seek).to_be_enabled()
        box = await seek.bounding_box()
        assert box
        await seek.hover(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
        preview = page.locator("#preview")
        await expect(preview).to_be_visible()
        shown = await preview.evaluate(
            """p => {
                 const tile = getComputedStyle(p.querySelector('.tile'));
                 return { time: Number(p.dataset.time), image: tile.backgroundImage,
                          position: tile.backgroundPosition, width: tile.width,
                          text: p.querySelector('.time').textContent };
               }"""
        )
        duration = float(await seek.get_attribute("max") or 0)
        assert shown["time"] == pytest.approx(duration / 2, abs=duration / 50)
        start, _, sprite, (x, y, w, _) = next(
            cue for cue in cues if cue[0] <= shown["time"] < cue[1]
        )
        assert shown["image"] == f'url("{sprite}")'
        assert [abs(float(n.removesuffix("px"))) for n in shown["position"].split()] == [x, y]
        assert shown["width"] == f"{w}px"
        assert shown["text"] == f"0:{int(shown['time']):02}"

        # Clicking where the preview is seeks there.
        await seek.click(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
        await page.wait_for_function(f"Math.abs({PLAYER}.currentTime - {shown['time']}) < 0.5")
        await page.mouse.move(0, 0)
        await expect(preview).to_be_hidden()
