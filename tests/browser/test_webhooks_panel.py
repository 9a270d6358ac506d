"""The example app's Webhooks view (#webhooks) in a real browser against `clipo-gql dev`: an
endpoint added for a real loopback receiver, its secret shown once (and verifying what the
receiver got, with the `standardwebhooks` library), the deliveries of an upload listed as
they are made, Redeliver, Delete, and a refused URL's message from the server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Page, expect
from standardwebhooks.webhooks import Webhook

from tests.browser.a11y import assert_accessible
from tests.browser.test_frontend import CHROMIUM, TIMEOUT_MS, browser, open_page, upload_by_http
from tests.browser.test_frontend_auth import auth_dev
from tests.clips import Clips
from tests.test_cli import DevServer, running_dev
from tests.webhook_receiver import ALLOWED_PORTS, Received, receiving

# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(180), pytest.mark.once_per_run]
__all__ = ["auth_dev", "browser"]  # fixtures, shared with the other browser tests
# Every wait here may span a poll (3 s) and a job on a loaded machine: expect's 5 s is short.

METADATA_URL = "http://169.254.169.254/"
CREATE = """mutation($url: String!) {
  createWebhookEndpoint(url: $url) { secret endpoint { id } }
}"""


@pytest.fixture(scope="module")
def hooks_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """`clipo-gql dev` allowed to post to the test's loopback receivers (private addresses on
    the receivers' ports). Port 80 too, so that the metadata address is refused for what it
    is: it stays refused with private addresses allowed."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: ./scripts/test installs it (apt-get chromium)")
    with running_dev(
        tmp_path_factory.mktemp("hooks-dev"),
        URL_FETCH_ALLOW_PRIVATE="true",
        URL_FETCH_ALLOWED_PORTS=f"{ALLOWED_PORTS},80",
    ) as dev:
        yield dev


@pytest.fixture
async def page(browser: Browser, hooks_dev: DevServer) -> AsyncIterator[Page]:
    async for page in open_page(browser, hooks_dev.url + "/"):
        await page.context.grant_permissions(
            ["clipboard-read", "clipboard-write"], origin=hooks_dev.url
        )
        await page.click("#nav-webhooks")  # a hash change, as a person gets there
        await expect(page.locator("#webhooks")).to_be_visible()
        await expect(page.locator("main")).to_be_hidden()
        await expect(page.locator("#nav-webhooks")).to_have_attribute("aria-current", "page")
        yield page
        assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1


async def gql(dev: DevServer, query: str, **variables: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=dev.url, timeout=30) as http:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
    body: dict[str, Any] = response.json()
    return body


def verified(secret: str, request: Received) -> dict[str, Any]:
    """What the receiving side's `standardwebhooks` library makes of a request."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def stored(page: Page) -> str:
    """Everything the page keeps in localStorage and sessionStorage, as one string."""
    text: str = await page.evaluate("JSON.stringify([{ ...localStorage }, { ...sessionStorage }])")
    return text


async def test_add_see_deliveries_redeliver_and_delete(
    page: Page, hooks_dev: DevServer, clips: Clips
):
    status = page.locator("#hooks-status")
    await expect(status).to_have_attribute("aria-live", "polite")
    async with receiving() as receiver:
        # Every event type is checked to begin with.
        boxes = page.get_by_role("group", name="Events").get_by_role("checkbox")
        await expect(boxes).to_have_count(4)
        for index in range(4):
            await expect(boxes.nth(index)).to_be_checked()
        await page.get_by_label("Endpoint URL").fill(receiver.url)
        await page.get_by_role("button", name="Add endpoint").click()

        # The secret, once, with the warning and a Copy button that copies it.
        box = page.locator("#hook-secret")
        await expect(box).to_be_visible()
        await expect(box).to_contain_text("you will not see this again")
        await expect(box.locator("#hook-secret-url")).to_have_text(receiver.url)
        secret = await box.locator("#hook-secret-value").inner_text()
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]+", secret), secret
        await expect(status).to_contain_text("shown only once")
        await box.get_by_role("button", name="Copy").click()
        await expect(status).to_have_text("Secret copied to the clipboard")
        assert await page.evaluate("navigator.clipboard.readText()") == secret
        assert secret not in await stored(page)

        endpoint = page.locator("#hooks-endpoints li")
        await expect(endpoint).to_have_count(1)
        await expect(endpoint.locator(".url")).to_have_text(receiver.url)
        await expect(endpoint.locator(".event-types")).to_have_text("all events")
        await expect(endpoint.locator("time")).to_have_count(1)
        await expect(endpoint.get_by_role("button", name="Deliveries")).to_have_attribute(
            "aria-pressed", "true"
        )
        await expect(page.locator("#deliveries-empty")).to_be_visible()
        await assert_accessible(page, "a new endpoint and its secret")

        # Put away, the secret is gone from the page (and the server does not list it).
        await box.get_by_role("button", name="I have copied it").click()
        await expect(box).to_be_hidden()
        await expect(page.get_by_label("Endpoint URL")).to_be_focused()
        assert secret not in await page.content()
        listed = await gql(hooks_dev, "{ webhookEndpoints { id url events createdAt } }")
        assert secret not in str(listed)
        (endpoint_id,) = [e["id"] for e in listed["data"]["webhookEndpoints"]]
        assert await endpoint.get_attribute("data-id") == endpoint_id

        # An upload's two events are delivered, and signed with the secret shown.
        async with httpx.AsyncClient(base_url=hooks_dev.url, timeout=60) as http:
            video_id = await upload_by_http(http, clips.h264_aac)
        created, ready = await receiver.wait_for(2, within=TIMEOUT_MS / 1000)
        assert verified(secret, created)["type"] == "video.created"
        assert verified(secret, ready)["type"] == "video.ready"
        assert verified(secret, ready)["data"]["video"]["id"] == video_id

        rows = page.locator("#deliveries tr")
        await expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
        await expect(rows.locator("th[scope=row]")).to_have_text(["VIDEO_READY", "VIDEO_CREATED"])
        for index in range(2):
            await expect(rows.nth(index).locator(".status")).to_have_text(
                "DELIVERED", timeout=TIMEOUT_MS
            )
            await expect(rows.nth(index).locator(".attempts")).to_have_text("1")
            await expect(rows.nth(index).locator(".result")).to_have_text("HTTP 200")
            await expect(rows.nth(index).locator(".next")).to_have_text("–")
        await expect(page.locator("#deliveries-table thead th[scope=col]")).to_have_count(7)
        ready_row = page.locator(f'#deliveries tr[data-event-id="{ready.headers["webhook-id"]}"]')
        await expect(ready_row.locator("th")).to_have_text("VIDEO_READY")
        await assert_accessible(page, "an endpoint's deliveries")

        # Refresh asks at once, without waiting for the next poll.
        async with page.expect_request(
            lambda request: "webhookDeliveries" in (request.post_data or "")
        ):
            await page.get_by_role("button", name="Refresh").click()

        # Redeliver: the same event again (same webhook-id), a second attempt, delivered.
        await ready_row.get_by_role("button", name="Redeliver").click()
        await expect(status).to_have_text("VIDEO_READY is being sent again")
        (*_, again) = await receiver.wait_for(3, within=TIMEOUT_MS / 1000)
        assert again.headers["webhook-id"] == ready.headers["webhook-id"]
        assert verified(secret, again)["type"] == "video.ready"
        await expect(ready_row.locator(".attempts")).to_have_text("2", timeout=TIMEOUT_MS)
        await expect(ready_row.locator(".status")).to_have_text("DELIVERED", timeout=TIMEOUT_MS)
        await expect(rows).to_have_count(2)

        # Delete asks first: dismissed, nothing happens; accepted, the endpoint goes.
        delete = endpoint.get_by_role("button", name=re.compile(r"^Delete"))
        await expect(delete).to_have_accessible_name(f"Delete {receiver.url}")
        questions: list[str] = []

        async def answer(dialog: Dialog, accept: bool) -> None:
            questions.append(dialog.message)
            await (dialog.accept() if accept else dialog.dismiss())

        page.once("dialog", lambda dialog: answer(dialog, accept=False))
        await delete.click()
        await expect(endpoint).to_have_count(1)
        page.once("dialog", lambda dialog: answer(dialog, accept=True))
        await delete.click()
        await expect(endpoint).to_have_count(0)
        await expect(status).to_have_text(f"Endpoint {receiver.url} deleted")
        await expect(page.locator("#hooks-empty")).to_be_visible()
        await expect(page.locator("#hook-deliveries")).to_be_hidden()
        assert len(questions) == 2, questions
        assert receiver.url in questions[0], questions
        listed = await gql(hooks_dev, "{ webhookEndpoints { id } }")
        assert listed["data"]["webhookEndpoints"] == []


async def test_a_refused_url_shows_the_servers_message(page: Page, hooks_dev: DevServer):
    # What the server says to a script, so the page's words can be compared with it.
    answer = await gql(hooks_dev, CREATE, url=METADATA_URL)
    (error,) = answer["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN_URL"
    assert "metadata" in error["message"], error

    await page.get_by_label("Endpoint URL").fill(METADATA_URL)
    await page.get_by_role("button", name="Add endpoint").click()
    status = page.locator("#hooks-status")
    await expect(status).to_contain_text(error["message"])
    await expect(status).to_have_class(re.compile(r"\berror\b"))
    await assert_accessible(page, "a refused endpoint URL")
    await expect(page.locator("#hook-secret")).to_be_hidden()
    await expect(page.locator("#hooks-endpoints li")).to_have_count(0)
    # The URL stays in the field, to be corrected.
    await expect(page.get_by_label("Endpoint URL")).to_have_value(METADATA_URL)

    # No event picked: said on the page, and nothing is sent.
    boxes = page.get_by_role("group", name="Events").get_by_role("checkbox")
    for index in range(4):
        await boxes.nth(index).uncheck()
    await page.get_by_label("Endpoint URL").fill("http://127.0.0.1:47099/hook")
    await page.get_by_role("button", name="Add endpoint").click()
    await expect(status).to_have_text("Pick at least one event to send to the endpoint")
    await expect(page.locator("#hooks-endpoints li")).to_have_count(0)


async def test_signed_out_the_view_says_to_sign_in(browser: Browser, auth_dev: DevServer):
    async for page in open_page(browser, auth_dev.url + "/#webhooks"):
        status = page.locator("#hooks-status")
        await expect(status).to_contain_text("Could not load the endpoints: Signed out")
        await expect(status).to_contain_text("Sign in above")
        await page.get_by_label("Endpoint URL").fill("https://example.com/hook")
        await page.get_by_role("button", name="Add endpoint").click()
        await expect(status).to_contain_text("The endpoint was refused: Signed out")
        await expect(page.locator("#hook-secret")).to_be_hidden()
