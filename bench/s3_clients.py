"""Which S3 client storage/s3.py uses: obstore against aioboto3 on row 19's load, a 1 GiB
file put into the S3 server as 8 MiB parts, 4 in flight, each client in a process of its own,
alternated. aioboto3 is not a dependency, so this runs apart from `make bench`:

    CLIPO_SEAWEEDFS_BIN=... uv run --frozen --with aioboto3 python -m bench.s3_clients [repeats]

(or with the CLIPO_S3_* variables of a running server). Prints MB/s and peak RSS per client.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.s3server import REGION, S3Server, from_env, seaweedfs_s3

MiB = 1024 * 1024
SIZE = 1 << 30
OBSTORE = """
import asyncio, os, resource, sys, obstore
from pathlib import Path
from obstore.store import S3Store
url, bucket, key, secret, path, name = sys.argv[1:]
store = S3Store(bucket, endpoint=url, access_key_id=key, secret_access_key=secret,
                region="us-east-1", virtual_hosted_style_request=False,
                client_options={"allow_http": True})
async def main():
    await obstore.put_async(store, name, Path(path), chunk_size=8 << 20, max_concurrency=4)
asyncio.run(main())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
os._exit(0)  # obstore's runtime threads can abort (SIGABRT) a normal interpreter exit
"""
AIOBOTO3 = """
import asyncio, resource, sys, aioboto3
from boto3.s3.transfer import TransferConfig
url, bucket, key, secret, path, name = sys.argv[1:]
async def main():
    session = aioboto3.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                               region_name="us-east-1")
    async with session.client("s3", endpoint_url=url) as s3:
        config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4)
        await s3.upload_file(path, bucket, name, Config=config)
asyncio.run(main())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def put(program: str, server: S3Server, path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", program, server.endpoint_url, server.bucket,
         server.access_key_id, server.secret_access_key, str(path), f"clients-{time.time_ns()}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return SIZE / MiB / (time.perf_counter() - started), int(done.stdout.split()[-1]) // 1024


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    assert REGION == "us-east-1"
    with contextlib.ExitStack() as stack:
        server = from_env() or stack.enter_context(seaweedfs_s3())
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        path = folder / "upload.bin"
        with path.open("wb") as out:
            for _ in range(SIZE // MiB):
                out.write(os.urandom(MiB))
        results: dict[str, list[tuple[float, int]]] = {"obstore": [], "aioboto3": []}
        for round_ in range(repeats):
            order = ["obstore", "aioboto3"] if round_ % 2 == 0 else ["aioboto3", "obstore"]
            for name in order:
                results[name].append(put(OBSTORE if name == "obstore" else AIOBOTO3, server, path))
    for name, runs in results.items():
        rates = [rate for rate, _ in runs]
        print(
            f"{name}: {statistics.median(rates):.0f} MB/s ({min(rates):.0f}-{max(rates):.0f}),"
            f" peak RSS {max(rss for _, rss in runs)} MiB"
        )


if __name__ == "__main__":
    main()
