"""GET/HEAD routes of the ladder (`/hls/{id}/...`) and the storyboard
(`/storyboard/{id}/storyboard.vtt|jpg`), under the rules of every media route
(`routes.output_file`: ownership, signed tokens, 404/409, Range and ETag).

Only paths the ladder generates are served: the master, and a rung folder's playlist, init
segment and media segments. With access control on, the playlists and the WebVTT are sent
with the token in every URI they hold, so a player (hls.js, Safari, ffmpeg) needs no header.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bson import ObjectId
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clipo_gql.auth.media_links import Kind
from clipo_gql.hls.playlists import with_token
from clipo_gql.models import Output
from clipo_gql.responses import FILE_MISSING, etag_matches
from clipo_gql.routes import Served, error, output_file, send_file
from clipo_gql.state import app_state
from clipo_gql.storage import STORYBOARD_SPRITE, STORYBOARD_VTT, Storage

_LADDER_PATH = re.compile(
    r"master\.m3u8|\d{2,4}p/(?:index\.m3u8|init(?:_\d{1,2})?\.mp4|seg\d{5}\.m4s)"
)
PLAYLIST = "application/vnd.apple.mpegurl"
TYPES = {".m3u8": PLAYLIST, ".mp4": "video/mp4", ".m4s": "video/iso.segment"}
# Small enough to rewrite in memory: a four-hour video's playlist is about 100 KB.
MAX_REWRITTEN_BYTES = 4 * 1024 * 1024


async def ladder_file(request: Request) -> Response:
    path: str = request.path_params["path"]
    if _LADDER_PATH.fullmatch(path) is None:
        return error(404, "No such HLS file")

    def pick(storage: Storage, video_id: ObjectId) -> Path:
        return storage.hls(video_id) / path

    found = await output_file(request, request.path_params["id"], pick, Kind.HLS, Output.HLS)
    if isinstance(found, Response):
        return found
    media_type = TYPES[Path(path).suffix]
    if media_type == PLAYLIST:
        return await _text(request, found, media_type)
    return send_file(request, found, media_type)


async def storyboard_file(request: Request) -> Response:
    name: str = request.path_params["name"]
    picks = {STORYBOARD_VTT: Storage.storyboard_vtt, STORYBOARD_SPRITE: Storage.storyboard_sprite}
    if name not in picks:
        return error(404, "No such storyboard file")
    found = await output_file(
        request, request.path_params["id"], picks[name], Kind.STORYBOARD, Output.STORYBOARD
    )
    if isinstance(found, Response):
        return found
    if name == STORYBOARD_VTT:
        return await _text(request, found, "text/vtt; charset=utf-8")
    return send_file(request, found, "image/jpeg")


async def _text(request: Request, found: Served, media_type: str) -> Response:
    """A playlist or the WebVTT: the file itself with auth off; with auth on, a copy whose
    URIs carry the token (its ETag then covers the token too), always sent by this process
    (behind nginx too: the bytes differ per request). Range is not offered for the copy
    (RFC 9110 lets a server answer 200): players fetch playlists whole. From an object store
    they are always sent by this process, never redirected: a player resolves a playlist's
    relative URIs against the URL it was answered from, which must stay ours."""
    if found.token is None and found.located.path is not None:
        return send_file(request, found, media_type)
    if found.located.size > MAX_REWRITTEN_BYTES:
        return error(500, "The playlist is too large to send")
    try:
        raw = await app_state(request).storage.read(found.located)
    except FileNotFoundError:
        return error(404, FILE_MISSING)
    body = raw if found.token is None else with_token(raw.decode("utf-8"), found.token).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"etag": etag, "cache-control": "private, no-cache" if found.token else "no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        return Response(status_code=200, headers=headers, media_type=media_type)
    return Response(body, headers=headers, media_type=media_type)


routes = [
    Route("/hls/{id}/{path:path}", ladder_file, methods=["GET", "HEAD"]),
    Route("/storyboard/{id}/{name}", storyboard_file, methods=["GET", "HEAD"]),
]
