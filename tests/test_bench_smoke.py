"""The benchmarks' smoke run: every benchmark once with tiny sizes, so bench/ cannot rot.

The numbers of a smoke run mean nothing; `make bench` is the real run (README).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.once_per_run
@pytest.mark.timeout(400)
def test_every_benchmark_runs(tmp_path: Path):
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=380,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    # Rows 19-20 need the S3 server the test command builds with Go.
    s3 = bool(os.environ.get("CLIPO_S3_ENDPOINT_URL") or os.environ.get("CLIPO_SEAWEEDFS_BIN"))
    for row in range(1, 21 if s3 else 19):
        assert f"\n| {row} | " in report, f"row {row} missing:\n{report}"
    assert "top rung copied vs encoded" in report
    # Rows 4 and 14 also through nginx with X-Accel-Redirect (bench/b4_14_accel.py).
    for row, what in ((4, "/stream random 1 MiB ranges"), (14, "/hls segment GETs")):
        assert f"| {row} | {what}, 50 concurrent, nginx + X-Accel-Redirect | req/s |" in report
    assert "did not run" not in report
