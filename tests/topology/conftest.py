from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clips import make_clip
from tests.topology.topology import Topology, ferretdb_binary, running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Once per ./scripts/test: in the pass on a real server, not again on the stand-in.
    if ferretdb_binary() and os.environ.get("MONGODB_URL"):
        return
    skip = pytest.mark.skip(
        reason="the topology runs its own FerretDB (CLIPO_FERRETDB_BIN), in the real-server pass"
    )
    for item in items:
        if "tests/topology/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """compose.yaml's processes: FerretDB, Redis, 2 × api, 2 × worker, one media folder.
    Shared by a module's tests; each test starts again what it stopped."""
    with running(tmp_path_factory.mktemp("topology")) as started:
        yield started


@pytest.fixture
def topo(topology: Topology) -> Iterator[Topology]:
    topology.ensure_running()
    yield topology
    topology.ensure_running()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # yuv444p must be transcoded, and 20 s of it keeps libx264 busy for a few seconds.
    return make_clip(
        tmp_path_factory.mktemp("long") / "long.mp4", seconds=20, size="640x360",
        pix_fmt="yuv444p", extra=["-preset", "ultrafast"],
    )  # fmt: skip
