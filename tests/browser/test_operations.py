"""The example app's Operations view (#operations) in a real browser against `clipo-gql dev`:
the queue, dev's in-process worker and what it runs (live), the latest failures and Retry, and
the message a non-admin gets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.a11y import assert_accessible
from tests.browser.test_frontend import CHROMIUM, TIMEOUT_MS, browser, open_page, upload_by_http
from tests.browser.test_frontend_auth import auth_dev, token_for
from tests.clips import Clips, make_clip
from tests.test_cli import DevServer, running_dev

# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(180), pytest.mark.once_per_run]
__all__ = ["auth_dev", "browser"]  # fixtures, shared with the other browser tests
# Every wait here may span a poll (2 s) and a job on a loaded machine: expect's 5 s is short.

# Every failure row the view removes, so a test can tell that Retry took the row away even
# when the retried video fails again (and comes back) before the test looks.
RECORD_REMOVED_FAILURES = """
window.__removedFailures = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver((changes) => {
    for (const change of changes)
      for (const node of change.removedNodes) window.__removedFailures.push(node.dataset.id);
  }).observe(document.getElementById("ops-failures"), { childList: true });
});
"""


@pytest.fixture(scope="module")
def ops_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """`clipo-gql dev` on its defaults: its worker reports a job as it starts and ends, so a
    job of a few seconds shows within a poll or two (its heartbeat is every 5 s)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: ./scripts/test installs it (apt-get chromium)")
    with running_dev(tmp_path_factory.mktemp("ops-dev")) as dev:
        yield dev


@pytest.fixture
async def page(browser: Browser, ops_dev: DevServer) -> AsyncIterator[Page]:
    async for page in open_page(browser, ops_dev.url + "/", RECORD_REMOVED_FAILURES):
        await page.click("#nav-operations")  # a hash change, as a person gets there
        await expect(page.locator("#operations")).to_be_visible(timeout=TIMEOUT_MS)
        await expect(page.locator("main")).to_be_hidden(timeout=TIMEOUT_MS)
        yield page
        assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1


async def upload(dev: DevServer, clip: Path) -> str:
    async with httpx.AsyncClient(base_url=dev.url, timeout=60) as http:
        return await upload_by_http(http, clip)


async def test_the_worker_and_what_it_runs_live(page: Page, ops_dev: DevServer, tmp_path: Path):
    workers = page.locator("#ops-workers .worker")
    await expect(workers).to_have_count(1, timeout=TIMEOUT_MS)  # dev runs one, in its process
    worker = workers.first
    await expect(worker.locator(".pid")).to_have_text(str(ops_dev.proc.pid), timeout=TIMEOUT_MS)
    await expect(worker.locator(".seen")).to_have_text(
        re.compile(r"^\d+ s ago$"), timeout=TIMEOUT_MS
    )
    await expect(page.locator("#ops-no-workers")).to_be_hidden(timeout=TIMEOUT_MS)
    done_before = int(await worker.locator(".jobs-done").inner_text())

    # yuv444p cannot be copied: a 20 s transcode lasts a few seconds on any machine.
    clip = make_clip(
        tmp_path / "Long take.mp4", seconds=20, size="640x360", pix_fmt="yuv444p", acodec=None
    )
    video_id = await upload(ops_dev, clip)
    running = worker.locator(f'.running [data-video-id="{video_id}"]')
    await expect(running.locator(".name")).to_have_text("Long take.mp4", timeout=TIMEOUT_MS)
    await expect(
        running.get_by_role("progressbar", name="Progress of Long take.mp4")
    ).to_be_visible(timeout=TIMEOUT_MS)
    await expect(worker.locator(".jobs-done")).to_have_text(
        str(done_before + 1), timeout=TIMEOUT_MS
    )
    await expect(running).to_have_count(0, timeout=TIMEOUT_MS)
    await expect(page.locator("#ops-running")).to_have_text("0", timeout=TIMEOUT_MS)
    await expect(page.locator("#ops-queued")).to_have_text("0", timeout=TIMEOUT_MS)
    await assert_accessible(page, "the Operations view")


async def test_a_failure_is_listed_and_retry_queues_it_again(
    page: Page, ops_dev: DevServer, clips: Clips
):
    worker = page.locator("#ops-workers .worker").first
    await expect(worker.locator(".jobs-failed")).to_have_text(
        re.compile(r"^\d+$"), timeout=TIMEOUT_MS
    )
    failed_before = int(await worker.locator(".jobs-failed").inner_text())

    video_id = await upload(ops_dev, clips.truncated)
    failure = page.locator(f'#ops-failures [data-id="{video_id}"]')
    await expect(failure.locator(".name")).to_have_text("truncated.mp4", timeout=TIMEOUT_MS)
    await expect(failure.locator(".error-text")).not_to_be_empty(timeout=TIMEOUT_MS)
    await expect(worker.locator(".jobs-failed")).to_have_text(
        str(failed_before + 1), timeout=TIMEOUT_MS
    )
    await assert_accessible(page, "the Operations view with a failure")

    await failure.get_by_role("button", name="Retry").click()
    # The row leaves at once; the worker runs the video again, which fails again.
    await page.wait_for_function(f"window.__removedFailures.includes('{video_id}')")
    await expect(worker.locator(".jobs-failed")).to_have_text(
        str(failed_before + 2), timeout=TIMEOUT_MS
    )
    await expect(failure.locator(".error-text")).not_to_be_empty(timeout=TIMEOUT_MS)
    await expect(page.locator("#ops-messages li")).to_have_count(0, timeout=TIMEOUT_MS)


async def test_a_non_admin_is_told_the_view_is_for_admins(browser: Browser, auth_dev: DevServer):
    async for page in open_page(browser, f"{auth_dev.url}/#token={token_for('bob')}"):
        await expect(page.locator("#who")).to_have_text("Signed in as bob", timeout=TIMEOUT_MS)
        await page.click("#nav-operations")
        await expect(page.locator("#ops-error")).to_contain_text(
            "view is for admins", timeout=TIMEOUT_MS
        )
        await expect(page.locator("#ops-content")).to_be_hidden(timeout=TIMEOUT_MS)
        await assert_accessible(page, "the Operations view for a non-admin")
