"""The GraphQL over HTTP reference audit (npm `graphql-http`, pinned in tests/audit/) against
the real server: every audit must pass, warnings included."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from clipo_gql.settings import Settings
from tests.conftest import Server, run_server

AUDIT_DIR = Path(__file__).parent / "audit"
INSTALL = "CLIPO_SETUP_TEST_TOOLS=1 ./scripts/setup (or: cd tests/audit && npm ci)"


@pytest.fixture
async def api(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    async for running in run_server(settings, worker=False):
        yield running


@pytest.mark.once_per_run
async def test_the_graphql_http_audit_passes_whole(api: Server):
    node = shutil.which("node")
    assert node is not None, f"node is not installed; {INSTALL} installs it"
    installed = AUDIT_DIR / "node_modules" / "graphql-http" / "package.json"
    assert installed.is_file(), f"the audit's npm packages are missing: run {INSTALL}"
    process = await asyncio.create_subprocess_exec(
        node,
        str(AUDIT_DIR / "audit.mjs"),
        f"{api.url}/graphql",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    results = json.loads(stdout)
    assert len(results) >= 61, f"the audit ran only {len(results)} checks"
    failing = [r for r in results if r["status"] != "ok"]
    assert not failing, "audits not ok:\n" + "\n".join(
        f"  {r['status']} {r['id']} {r['name']}: {r['reason']}"
        f" (HTTP {r['httpStatus']}, {r['contentType']}): {r['body'][:200]}"
        for r in failing
    )
