"""GraphiQL at /graphql in a real browser with no way out: every request to another host is
aborted (and recorded, so the test can say none was attempted). Against `clipo-gql dev` with
AUTH_MODE=required, so a query or subscription only works if the header editor's
`Authorization` reached the server, over HTTP and on the websocket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.browser.test_frontend import CHROMIUM, TIMEOUT_MS, browser, upload_by_http
from tests.browser.test_frontend_auth import auth_dev, token_for
from tests.clips import make_clip
from tests.test_cli import DevServer

LOCAL = {"127.0.0.1", "localhost"}
# The page drives the API, whose database behaviour the API tests check on both databases.
pytestmark = [pytest.mark.timeout(180), pytest.mark.once_per_run]
__all__ = ["auth_dev", "browser"]  # fixtures, shared with the other browser tests

# Content-Security-Policy refusals, which the console may not show as page errors.
RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def bearer(subject: str) -> str:
    return "Bearer " + token_for(subject)


@pytest.fixture(scope="module")
def dev(auth_dev: DevServer) -> DevServer:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: ./scripts/test installs it (apt-get chromium)")
    return auth_dev


class Offline:
    """The page as it is without internet: other hosts' requests are refused and noted."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.elsewhere: list[str] = []
        self.local: list[str] = []
        self.websockets: list[str] = []
        self.errors: list[str] = []

    async def route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL:
            self.local.append(urlsplit(route.request.url).path)
            await route.continue_()
        else:
            self.elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    def editor(self, selector: str) -> str:
        return f"document.querySelector({json.dumps(selector + ' .CodeMirror')}).CodeMirror"

    async def set_query(self, text: str) -> None:
        editor = self.editor(".graphiql-query-editor")
        await self.page.evaluate(f"{editor}.setValue({json.dumps(text)})")
        # GraphiQL parses the edit 100 ms later; until then Run would send the old operation
        # (a subscription would go over HTTP, as a query).
        await self.page.wait_for_function(
            f"() => {editor}.documentAST?.loc?.source?.body === {json.dumps(text)}"
        )

    async def set_headers(self, headers: dict[str, str]) -> None:
        await self.page.click('.graphiql-editor-tools button[data-name="headers"]')
        tool = 'section.graphiql-editor-tool[aria-label="Headers"] .graphiql-editor:not(.hidden)'
        await self.page.wait_for_selector(tool + " .CodeMirror")
        await self.page.evaluate(f"{self.editor(tool)}.setValue({json.dumps(json.dumps(headers))})")

    async def run(self) -> None:
        await self.page.click(".graphiql-execute-button")

    async def response(self) -> str:
        text: str = await self.page.evaluate(f"{self.editor('.graphiql-response')}.getValue()")
        return text


@pytest.fixture
async def graphiql(browser: Browser, dev: DevServer) -> AsyncIterator[Offline]:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    offline = Offline(page)
    await context.route("**/*", offline.route)
    page.on("websocket", lambda ws: offline.websockets.append(ws.url))
    page.on("pageerror", lambda error: offline.errors.append(str(error)))
    await page.add_init_script(RECORD_CSP)
    await page.goto(dev.url + "/graphql")
    await page.wait_for_selector(".graphiql-query-editor .CodeMirror")
    yield offline
    violations = await page.evaluate("window.__cspViolations")
    await context.close()
    assert offline.elsewhere == [], "the page tried to reach another host"
    assert "/graphiql/graphiql.min.js" in offline.local  # the route saw the page's requests
    assert all(urlsplit(url).hostname in LOCAL for url in offline.websockets)
    assert violations == []
    assert offline.errors == [], "the page threw"


async def wait_for_response(graphiql: Offline, *needles: str) -> str:
    try:
        await graphiql.page.wait_for_function(
            f"""() => {{
                const text = {graphiql.editor(".graphiql-response")}.getValue();
                return {json.dumps(list(needles))}.every((needle) => text.includes(needle));
            }}"""
        )
    except PlaywrightTimeout:
        pytest.fail(f"the result pane never showed {needles}: {await graphiql.response()!r}")
    return await graphiql.response()


async def test_a_query_with_the_header_editors_token(graphiql: Offline, dev: DevServer):
    await expect(graphiql.page.locator('button[data-name="headers"]')).to_be_visible()
    await graphiql.set_query("{ me { ownerId } videos { edges { node { id } } } }")
    await graphiql.run()
    refused = await wait_for_response(graphiql, "UNAUTHENTICATED")
    assert '"data"' not in refused or '"me"' not in refused

    await graphiql.set_headers({"Authorization": bearer("alice")})
    await graphiql.run()
    answer = json.loads(await wait_for_response(graphiql, '"ownerId": "alice"'))
    assert answer == {"data": {"me": {"ownerId": "alice"}, "videos": {"edges": []}}}


async def test_a_subscription_over_the_websocket(graphiql: Offline, dev: DevServer, tmp_path):
    token = bearer("bob")
    # Slow to transcode (yuv444p cannot be copied), so the first event is not the last.
    clip = make_clip(tmp_path / "clip.mp4", seconds=6, size="640x360", pix_fmt="yuv444p")
    async with httpx.AsyncClient(base_url=dev.url, timeout=30) as http:
        video_id = await upload_by_http(http, clip, authorization=token)

    await graphiql.set_headers({"Authorization": token})
    await graphiql.set_query(
        f'subscription {{ videoStatus(id: "{video_id}") {{ id ownerId status }} }}'
    )
    await graphiql.run()
    first = json.loads(await wait_for_response(graphiql, video_id))
    assert first["data"]["videoStatus"]["ownerId"] == "bob"
    assert first["data"]["videoStatus"]["status"] in ("PENDING", "PROCESSING", "DONE")
    last = json.loads(await wait_for_response(graphiql, '"status": "DONE"'))
    assert last["data"]["videoStatus"] == {"id": video_id, "ownerId": "bob", "status": "DONE"}
    ws_url = dev.url.replace("http://", "ws://") + "/graphql"
    assert ws_url in graphiql.websockets


async def test_a_script_that_does_not_load_says_how_to_install(graphiql: Offline, dev: DevServer):
    await graphiql.page.route("**/graphiql/graphiql.min.js*", lambda route: route.abort())
    await graphiql.page.reload()
    notice = graphiql.page.locator("#not-started")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text("./scripts/setup")
    await expect(graphiql.page.locator("#graphiql")).to_be_hidden()
    # The explorer plugin, loaded after it, throws for want of GraphiQL: expected here.
    assert all("React" in error for error in graphiql.errors), graphiql.errors
    graphiql.errors.clear()
