"""GraphiQL at `GET /graphql`, from this server's own files: no CDN, so it works offline.

The npm packages pinned in `package.json`/`package-lock.json` beside this file are installed
into `node_modules/` by `./scripts/setup` (`npm ci`); `GRAPHIQL_ASSETS_DIR` points elsewhere.
Only the files in `ASSETS` are served, at `/graphiql/<name>`; the page (`page.html`, with its
script and style in `page.js`/`page.css`) loads nothing else and sends a CSP that says so.
Without the npm files, `GET /graphql` in a browser answers 503 with how to install them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from string import Template

from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route, request_response

from clipo_gql.settings import Settings

HERE = Path(__file__).parent
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
IMMUTABLE = "public, max-age=31536000, immutable"
INSTALL = "./scripts/setup"
INSTALL_BY_HAND = "cd clipo_gql/graphiql && npm ci"
# A Host header fit to put in the CSP (anything else: the policy just names 'self').
HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class Asset:
    path: str  # under node_modules/ (npm) or beside this file (ours)
    media_type: str
    npm: bool = True


# The whole allow-list, in the order the page loads them (React before what uses it).
ASSETS: dict[str, Asset] = {
    "graphiql.min.css": Asset("graphiql/graphiql.min.css", CSS),
    "plugin-explorer.css": Asset("@graphiql/plugin-explorer/dist/style.css", CSS),
    "page.css": Asset("page.css", CSS, npm=False),
    "react.production.min.js": Asset("react/umd/react.production.min.js", JS),
    "react-dom.production.min.js": Asset("react-dom/umd/react-dom.production.min.js", JS),
    "graphiql.min.js": Asset("graphiql/graphiql.min.js", JS),
    "plugin-explorer.umd.js": Asset("@graphiql/plugin-explorer/dist/index.umd.js", JS),
    "page.js": Asset("page.js", JS, npm=False),
}

# GraphiQL sets inline styles (React `style=`) and its fonts are data: URLs; nothing else.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; connect-src $connect; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class GraphiQLFiles:
    """Where the allow-listed files are, and a version token per file for cache busting."""

    def __init__(self, node_modules: Path) -> None:
        self.node_modules = node_modules

    def path(self, asset: Asset) -> Path:
        return (self.node_modules if asset.npm else HERE) / asset.path

    def version(self, asset: Asset) -> str | None:
        """Changes whenever `npm ci` rewrites the file; None when it is not there."""
        try:
            stat = self.path(asset).stat()
        except OSError:
            return None
        return f"{stat.st_mtime_ns:x}{stat.st_size:x}"

    def missing(self) -> list[str]:
        return [a.path for a in ASSETS.values() if a.npm and self.version(a) is None]


def files_for(settings: Settings) -> GraphiQLFiles:
    return GraphiQLFiles(settings.graphiql_assets_dir or HERE / "node_modules")


def page(request: Request, files: GraphiQLFiles) -> Response:
    """The GraphiQL page, or (503) how to install its files when they are missing."""
    missing = files.missing()
    if missing:
        return HTMLResponse(
            Template((HERE / "missing.html").read_text()).substitute(
                install=escape(INSTALL),
                by_hand=escape(INSTALL_BY_HAND),
                missing="".join(f"<li><code>{escape(m)}</code></li>" for m in missing),
            ),
            status_code=503,
            headers={"cache-control": "no-store"},
        )
    # Relative URLs: /graphql's page loads /graphiql/..., and so under any path prefix.
    tags = []
    for name, asset in ASSETS.items():
        url = escape(f"graphiql/{name}?v={files.version(asset)}")
        if asset.media_type == CSS:
            tags.append(f'<link rel="stylesheet" href="{url}" />')
        else:
            tags.append(f'<script src="{url}" defer></script>')
    # 'self' covers ws: in CSP 3 only; name our own websocket origin for older browsers.
    connect = "'self'"
    host = request.headers.get("host", "")
    if HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return HTMLResponse(
        Template((HERE / "page.html").read_text()).substitute(assets="\n    ".join(tags)),
        headers={
            "cache-control": "no-cache",
            "content-security-policy": Template(CSP).substitute(connect=connect),
            "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff",
        },
    )


def routes(settings: Settings) -> list[BaseRoute]:
    files = files_for(settings)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        found = ASSETS.get(name)
        version = files.version(found) if found is not None else None
        if found is None or version is None:
            raise HTTPException(404, "Not Found")
        # The page asks for ?v=<current version>: that URL's bytes never change.
        current = request.query_params.get("v") == version
        return FileResponse(
            files.path(found),
            media_type=found.media_type,
            headers={
                "cache-control": IMMUTABLE if current else "no-cache",
                "x-content-type-options": "nosniff",
            },
        )

    # graphiql.min.js is 3.5 MB, about 1 MB gzipped: worth compressing once per browser,
    # since the versioned URL is then cached for good.
    compressed = GZipMiddleware(request_response(asset), minimum_size=1024)
    return [Route("/graphiql/{name}", compressed, methods=["GET", "HEAD"])]
