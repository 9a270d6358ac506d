"""The frontend example against `clipo-gql dev` with AUTH_MODE=required: it asks for a token,
takes one from `#token=` or the sign-in form, and then works as the owner (signed media
URLs included: the player needs no header)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect
from pydantic import SecretStr

from clipo_gql.auth.tokens import mint
from clipo_gql.settings import Settings
from tests.browser.a11y import assert_accessible
from tests.browser.test_frontend import browser, open_page, upload_via_picker
from tests.clips import Clips
from tests.test_cli import DevServer, running_dev

SECRET = "browser-jwt-secret-" + "b" * 32
# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(180), pytest.mark.once_per_run]
__all__ = ["browser"]  # the fixture, shared with test_frontend


def token_for(subject: str) -> str:
    return mint(Settings(auth_jwt_secret=SecretStr(SECRET)), subject)


@pytest.fixture(scope="module")
def auth_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running_dev(
        tmp_path_factory.mktemp("auth-dev"),
        AUTH_MODE="required",
        AUTH_JWT_SECRET=SECRET,
        MEDIA_URL_SECRET="browser-media-secret-" + "m" * 32,
    ) as dev:
        yield dev


async def test_signed_out_the_page_asks_for_a_token(browser: Browser, auth_dev: DevServer):
    async for page in open_page(browser, auth_dev.url + "/"):
        await expect(page.locator("#who")).to_have_text("This server needs a token.")
        await expect(page.locator("#sign-in")).to_be_visible()
        await expect(page.locator("#messages")).to_contain_text("Signed out")
        await assert_accessible(page, "the token prompt")
        # The form: bob signs in.
        await page.fill("#token-input", token_for("bob"))
        await page.click("#sign-in button")
        await expect(page.locator("#who")).to_have_text("Signed in as bob")
        await expect(page.locator("#sign-in")).to_be_hidden()


async def test_a_token_link_signs_in_and_everything_works(
    browser: Browser, auth_dev: DevServer, clips: Clips
):
    async for page in open_page(browser, f"{auth_dev.url}/#token={token_for('alice')}"):
        await expect(page.locator("#who")).to_have_text("Signed in as alice")
        assert "token" not in page.url  # taken out of the address bar
        video_id = await upload_via_picker(page, clips.h264_aac)
        row = page.locator(f'#videos li[data-id="{video_id}"]')
        await expect(row.locator(".badge")).to_have_text("DONE")
        await row.click()
        # Metadata loaded through the HLS ladder: the master, a rung's playlist and its init
        # segment were all fetched with the tokens the playlists carry, without a header.
        await page.wait_for_function("document.getElementById('player').readyState >= 1")
        await expect(page.locator("#player")).to_have_attribute("data-engine", "hls")
        src = await page.locator("#player").get_attribute("data-source")
        assert src is not None
        assert f"/hls/{video_id}/master.m3u8?token=" in src
        referrer = await page.evaluate("document.querySelector('meta[name=referrer]').content")
        assert referrer == "no-referrer"
    # Bob does not see alice's video.
    async for page in open_page(browser, f"{auth_dev.url}/#token={token_for('bob')}"):
        await expect(page.locator("#who")).to_have_text("Signed in as bob")
        await expect(page.locator("#videos li")).to_have_count(0)


def test_dev_auth_prints_a_signed_in_link(tmp_path: Path):
    with running_dev(tmp_path, AUTH_MODE="required", AUTH_JWT_SECRET=SECRET) as dev:
        pass
    log = (tmp_path / "dev.log").read_text()
    assert "#token=" in log, log[-2000:]
    assert dev.url.split("//")[1] in log
