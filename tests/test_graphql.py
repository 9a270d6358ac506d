"""The GraphQL surface: upload refusals, pagination, error codes, limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from clipo_gql import pagination
from clipo_gql.devredis import private_redis
from clipo_gql.models import Video, VideoSource, VideoStatus, now
from clipo_gql.schema import build_schema
from clipo_gql.settings import Settings
from tests.conftest import Server, incoming_files, run_server, video_files

PAGE = """query($first: Int, $after: String, $status: VideoStatus) {
  videos(first: $first, after: $after, status: $status) {
    totalCount edges { cursor node { id filename status } } pageInfo { hasNextPage endCursor }
  }
}"""


async def count_videos() -> int:
    return await Video.find_all().count()


async def test_not_a_video_is_refused_and_nothing_is_kept(server: Server, clips: Any):
    response = await server.upload(clips.not_video, filename="notes.mp4")
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA"
    assert "video" in body["errors"][0]["message"]
    assert await count_videos() == 0
    assert incoming_files(server.settings) == []
    assert video_files(server.settings) == []


async def test_empty_file_is_refused(server: Server, tmp_path: Path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    body = (await server.upload(empty)).json()
    assert body["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA"
    assert await count_videos() == 0


async def test_upload_over_the_cap_is_413_and_nothing_is_kept(
    settings: Settings, clips: Any, redis
):
    small = settings.model_copy(update={"max_upload_bytes": 10_000})
    async for server in run_server(small):
        response = await server.upload(clips.h264_aac)  # ~100 kB
        assert response.status_code == 413
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert "9.8 KiB" in error["message"]
        assert await count_videos() == 0
        assert incoming_files(small) == []
        assert video_files(small) == []


async def test_multipart_without_preflight_header_is_refused(server: Server, clips: Any):
    with clips.h264_aac.open("rb") as fh:
        response = await server.http.post(
            "/graphql",
            data={
                "operations": '{"query": "mutation($f: Upload!) { uploadVideo(file: $f) { id } }",'
                ' "variables": {"f": null}}',
                "map": '{"0": ["variables.f"]}',
            },
            files={"0": ("a.mp4", fh, "video/mp4")},
        )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await count_videos() == 0
    assert incoming_files(server.settings) == []


async def test_upload_variable_that_is_not_a_file(server: Server):
    body = await server.gql(
        "mutation($f: Upload!) { uploadVideo(file: $f) { id } }", f="/etc/passwd"
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await count_videos() == 0


async def test_oversized_json_body_is_413(server: Server):
    response = await server.http.post(
        "/graphql", json={"query": "{ __typename }", "pad": "x" * 2_000_000}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def make_videos(count: int) -> list[Video]:
    start = now() - timedelta(hours=1)
    videos = []
    for i in range(count):
        video = Video(
            filename=f"v{i}.mp4",
            source=VideoSource.UPLOAD,
            status=VideoStatus.DONE if i % 2 else VideoStatus.FAILED,
            # two videos share each timestamp: the id breaks the tie
            created_at=start + timedelta(seconds=i // 2),
        )
        await video.insert()
        videos.append(video)
    return videos


async def test_videos_pages_newest_first_without_gaps(server: Server):
    made = await make_videos(7)
    expected = [str(v.id) for v in sorted(made, key=lambda v: (v.created_at, v.id), reverse=True)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = (await server.gql(PAGE, first=3, after=after))["data"]["videos"]
        assert data["totalCount"] == 7
        seen += [e["node"]["id"] for e in data["edges"]]
        pages += 1
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
        assert after == data["edges"][-1]["cursor"]
    assert seen == expected
    assert pages == 3


async def test_videos_filters_by_status(server: Server):
    await make_videos(5)
    data = (await server.gql(PAGE, first=10, status="DONE"))["data"]["videos"]
    assert data["totalCount"] == 2
    assert {e["node"]["status"] for e in data["edges"]} == {"DONE"}
    assert data["pageInfo"] == {"hasNextPage": False, "endCursor": data["edges"][-1]["cursor"]}
    empty = (await server.gql(PAGE, first=10, status="PROCESSING"))["data"]["videos"]
    assert empty == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


async def test_videos_are_counted_only_when_totalcount_is_asked_for(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    await make_videos(3)
    counted: list[dict[str, Any]] = []
    real_count = pagination.count

    async def count(matching: dict[str, Any]) -> int:
        counted.append(matching)
        return await real_count(matching)

    monkeypatch.setattr(pagination, "count", count)
    page = "{ videos(first: 2) { edges { node { id } } pageInfo { hasNextPage } } }"
    data = (await server.gql(page))["data"]["videos"]
    assert len(data["edges"]) == 2
    assert counted == []
    both = "{ videos(first: 2, status: DONE) { totalCount edges { node { id } } } }"
    assert (await server.gql(both))["data"]["videos"]["totalCount"] == 1
    assert counted == [{"owner_id": "anonymous", "status": "DONE"}]


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"first": 101}, "between 0 and 100"),
        ({"first": -1}, "between"),
        ({"first": 5, "after": "not-a-cursor"}, "Invalid cursor"),
    ],
)
async def test_videos_bad_arguments(server: Server, variables: dict[str, Any], fragment: str):
    body = await server.gql(PAGE, **variables)
    error = body["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert fragment in error["message"]


async def test_query_limits_and_no_suggestions(server: Server):
    tokens = "{ " + " ".join(["__typename"] * 2500) + " }"
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(100)) + " }"
    for query, words in ((tokens, "token"), (aliases, "alias")):
        error = (await server.gql(query))["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert words in error["message"].lower(), error["message"]
    body = await server.gql("{ vidoes { totalCount } }")
    message = body["errors"][0]["message"]
    assert "Did you mean" not in message


async def test_depth_limit():
    # Our types do not nest deeper than `videos.edges.node.field` (and the depth limiter
    # ignores introspection), so the limit is shown on a schema built with a small one.
    shallow = build_schema(Settings(graphql_max_depth=2))
    result = await shallow.execute("{ videos { edges { node { id } } } }")
    assert result.errors
    assert "depth" in result.errors[0].message
    assert result.errors[0].extensions == {"code": "BAD_USER_INPUT"}


async def test_unexpected_errors_are_masked(server: Server, monkeypatch: pytest.MonkeyPatch):
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals at /srv/app")

    monkeypatch.setattr("clipo_gql.schema.page", boom)
    body = await server.gql(PAGE, first=1)
    error = body["errors"][0]
    assert error == {**error, "message": "Internal server error"}
    assert error["extensions"]["code"] == "INTERNAL"
    assert "secret" not in str(body)


async def test_health_and_ready(server: Server):
    assert (await server.http.get("/healthz")).status_code == 200
    ready = await server.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


async def test_graphiql_in_a_browser(server: Server):
    response = await server.http.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_queries_via_get_but_never_mutations(server: Server):
    ok = await server.http.get("/graphql", params={"query": "{ videos { totalCount } }"})
    assert ok.json() == {"data": {"videos": {"totalCount": 0}}}
    refused = await server.http.get(
        "/graphql", params={"query": 'mutation { deleteVideo(id: "x") }'}
    )
    assert refused.status_code == 400
    assert "GET" in refused.text


async def test_redis_down_is_reported_and_uploads_keep_nothing(settings: Settings, clips: Any):
    with private_redis() as url:
        own = settings.model_copy(update={"redis_url": url})
        async for server in run_server(own):
            assert (await server.http.get("/readyz")).status_code == 200
            killer = Redis.from_url(url)
            await killer.shutdown(nosave=True)
            await killer.aclose()

            ready = await server.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "unavailable", "down": ["redis"]}
            assert (await server.http.get("/healthz")).status_code == 200

            body = (await server.upload(clips.h264_aac)).json()
            assert body["errors"][0]["extensions"]["code"] == "INTERNAL"
            assert "try again" in body["errors"][0]["message"]
            assert await count_videos() == 0
            assert incoming_files(own) == []
            assert video_files(own) == []


async def test_public_base_url_builds_the_links(settings: Settings, redis):
    public = settings.model_copy(update={"public_base_url": "https://videos.example.com"})
    async for server in run_server(public):
        done = next(v for v in await make_videos(2) if v.status is VideoStatus.DONE)
        failed = next(v for v in await make_videos(2) if v.status is VideoStatus.FAILED)
        query = (
            "query($id: ID!) { video(id: $id) { thumbnailUrl streamUrl downloadUrl "
            "metadataUrl metadataDownloadUrl } }"
        )
        links = (await server.gql(query, id=str(done.id)))["data"]["video"]
        base = "https://videos.example.com"
        assert links == {
            "thumbnailUrl": f"{base}/thumbnails/{done.id}.jpg",
            "streamUrl": f"{base}/stream/{done.id}",
            "downloadUrl": f"{base}/download/{done.id}",
            "metadataUrl": f"{base}/metadata/{done.id}",
            "metadataDownloadUrl": f"{base}/download/{done.id}/metadata",
        }
        none = (await server.gql(query, id=str(failed.id)))["data"]["video"]
        assert set(none.values()) == {None}


async def test_retry_while_redis_is_down_leaves_the_video_failed(settings: Settings):
    with private_redis() as url:
        own = settings.model_copy(update={"redis_url": url})
        async for server in run_server(own):
            video = Video(
                filename="f.mp4", source=VideoSource.UPLOAD, status=VideoStatus.FAILED, error="x"
            )
            await video.insert()
            killer = Redis.from_url(url)
            await killer.shutdown(nosave=True)
            await killer.aclose()
            body = await server.gql(
                "mutation($id: ID!) { retryVideo(id: $id) { status } }", id=str(video.id)
            )
            assert "try again" in body["errors"][0]["message"]
            stored = await Video.get(video.id)
            assert stored is not None
            assert stored.status is VideoStatus.FAILED
