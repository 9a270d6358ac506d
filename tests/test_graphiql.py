"""GraphiQL from our own files (clipo_gql/graphiql/): the page, its allow-listed assets, and
the notice when they are not installed. The browser side is tests/browser/test_graphiql.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from redis.asyncio import Redis

from clipo_gql.graphiql import ASSETS, CSS, JS, files_for
from clipo_gql.settings import Settings
from tests.conftest import Server, run_server

HTML = {"accept": "text/html"}


class Links(HTMLParser):
    """Every URL the page names, and every script without a `src` (inline)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if found.get(name):
                self.urls.append(found[name] or "")
        if tag == "script" and not found.get("src"):
            self.inline_scripts += 1


def links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


@pytest.fixture(autouse=True)
def installed(settings: Settings) -> None:
    missing = files_for(settings).missing()
    if missing:
        pytest.fail(f"GraphiQL's npm files are not installed ({missing}): run ./scripts/setup")


async def test_the_page_names_no_other_origin(server: Server):
    response = await server.http.get("/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = links(response.text)
    assert page.inline_scripts == 0
    page_url = f"{server.url}/graphql"
    served = set()
    for url in page.urls:
        assert urlsplit(url).scheme == "", url
        assert not url.startswith("//"), url
        absolute = urlsplit(urljoin(page_url, url))
        assert absolute.netloc == urlsplit(server.url).netloc, url
        assert absolute.path.startswith("/graphiql/"), url
        served.add(absolute.path.removeprefix("/graphiql/"))
    assert served == set(ASSETS)
    assert "http://" not in response.text
    assert "https://" not in response.text

    policy = response.headers["content-security-policy"]
    csp = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert csp["script-src"] == "'self'"
    assert csp["default-src"] == "'none'"
    host = urlsplit(server.url).netloc
    assert csp["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert response.headers["cache-control"] == "no-cache"


async def test_each_asset_with_its_content_type_and_a_long_cache(server: Server):
    page = links((await server.http.get("/graphql", headers=HTML)).text)
    files = files_for(server.settings)
    for url in page.urls:
        name = urlsplit(url).path.removeprefix("graphiql/")
        response = await server.http.get("/" + url)
        assert response.status_code == 200, url
        expected = ASSETS[name].media_type
        assert expected in (JS, CSS)
        assert response.headers["content-type"] == expected, url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == files.path(ASSETS[name]).read_bytes()
        if name == "graphiql.min.js":  # 3.5 MB: sent compressed to a browser that accepts it
            assert response.headers["content-encoding"] == "gzip"
            assert response.num_bytes_downloaded < len(response.content) / 2
        # Without the page's version token the URL is not forever.
        bare = await server.http.get(f"/graphiql/{name}")
        assert bare.status_code == 200
        assert bare.headers["cache-control"] == "no-cache"
        head = await server.http.head("/" + url)
        assert head.status_code == 200
        assert head.content == b""


@pytest.mark.parametrize(
    ("host", "connect"),
    [
        ("[::1]:8000", "'self' ws://[::1]:8000 wss://[::1]:8000"),
        ("api.example.org", "'self' ws://api.example.org wss://api.example.org"),
        ("x; script-src *", "'self'"),  # never written into the policy
        ("x'y", "'self'"),
    ],
)
async def test_the_policy_names_only_a_plain_host(server: Server, host: str, connect: str):
    response = await server.http.get("/graphql", headers={**HTML, "host": host})
    policy = response.headers["content-security-policy"]
    assert f"connect-src {connect};" in policy
    assert policy.count("script-src") == 1


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/nope.js",
        "/graphiql/package.json",
        "/graphiql/page.html",
        "/graphiql/__init__.py",
        "/graphiql/graphiql.min.js.map",
        "/graphiql/graphiql/graphiql.min.js",
        "/graphiql/..%2Fpackage.json",
        "/graphiql/",
    ],
)
async def test_anything_off_the_list_is_not_found(server: Server, path: str):
    response = await server.http.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


@pytest.fixture
async def without_assets(settings: Settings, redis: Redis, tmp_path: Path) -> AsyncIterator[Server]:
    empty = tmp_path / "no-node-modules"
    empty.mkdir()
    async for running in run_server(
        settings.model_copy(update={"graphiql_assets_dir": empty}), worker=False
    ):
        yield running


async def test_without_its_files_the_page_says_how_to_install_them(without_assets: Server):
    response = await without_assets.http.get("/graphql", headers=HTML)
    assert response.status_code == 503
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "./scripts/setup" in response.text
    assert "cd clipo_gql/graphiql &amp;&amp; npm ci" in response.text
    assert "graphiql/graphiql.min.js" in response.text  # what is missing
    assert links(response.text).urls == []  # loads nothing
    # Its own files still are ours, the npm ones are simply not there.
    assert (await without_assets.http.get("/graphiql/graphiql.min.js")).status_code == 404
    assert (await without_assets.http.get("/graphiql/page.js")).status_code == 200
    # The API does not depend on them.
    assert await without_assets.gql("{ videos { totalCount } }") == {
        "data": {"videos": {"totalCount": 0}}
    }


async def test_the_api_is_not_the_page(server: Server):
    # A browser's GET with a query (its Accept ends in */*) gets GraphQL, not the page; so
    # does a client asking for JSON only.
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await server.http.get(
        "/graphql", params={"query": "{ videos { totalCount } }"}, headers={"accept": browser}
    )
    assert response.json() == {"data": {"videos": {"totalCount": 0}}}
    json_only = await server.http.get("/graphql", headers={"accept": "application/json"})
    assert json_only.status_code == 400
    assert json_only.headers["content-type"].startswith("application/json")
