from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clipo_gql.schema import schema

ROOT = Path(__file__).resolve().parent.parent


def test_schema_file_matches_the_code():
    assert (ROOT / "schema.graphql").read_text() == schema.as_str() + "\n", (
        "schema.graphql is stale: run `uv run clipo-gql export-schema > schema.graphql`"
    )


def test_export_schema_command_prints_the_sdl():
    out = subprocess.run(
        [sys.executable, "-m", "clipo_gql.cli", "export-schema"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    assert out == (ROOT / "schema.graphql").read_text()


def test_contract_names():
    sdl = schema.as_str()
    for fragment in (
        "enum VideoStatus",
        "PENDING",
        "PROCESSING",
        "DONE",
        "FAILED",
        "enum VideoSource",
        "uploadVideo(file: Upload!): Video!",
        "video(id: ID!): Video",
        "videos(first: Int = 20, after: String = null, status: VideoStatus = null, "
        "owner: String = null): VideoConnection!",
        "ownerId: String!",
        "me: Principal!",
        "apiKeys: [ApiKey!]!",
        "createApiKey(label: String!, admin: Boolean = false): ApiKeyCreated!",
        "revokeApiKey(id: ID!): Boolean!",
        "videoStatus(id: ID!): Video!",
        "sizeBytes: BigInt",
        "durationText: String",
        "totalCount: Int!",
        "hasNextPage: Boolean!",
        "endCursor: String",
    ):
        assert fragment in sdl, fragment
