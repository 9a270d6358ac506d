"""The cost of starting a tool from a worker-sized Python process, three ways (media.py):

    uv run --frozen python -m bench.spawn [resident MiB, default 150] [spawns, default 200]

a preexec_fn (CPython then forks the whole address space), `setpriv --pdeathsig KILL` with no
preexec_fn (CPython uses vfork), and vfork with no death signal at all, alternated twice.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sys
import time

from clipo_gql.media import _die_with_parent


async def spawn(preexec: bool, wrapper: bool) -> None:
    argv = [shutil.which("true") or "/bin/true"]
    if wrapper:
        argv = [shutil.which("setpriv") or "setpriv", "--pdeathsig", "KILL", "--", *argv]
    options = {"preexec_fn": functools.partial(_die_with_parent, os.getpid())} if preexec else {}
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, **options,
    )  # fmt: skip
    assert proc.stderr is not None
    await proc.stderr.read()
    await proc.wait()


async def main(resident_mib: int, count: int) -> None:
    # Touched pages, as a worker's heap is: a fork copies their page tables.
    ballast = [bytearray(1 << 20) for _ in range(resident_mib)]
    for block in ballast:
        block[::4096] = b"x" * len(block[::4096])
    ways = [
        ("preexec_fn", True, False),
        ("setpriv, vfork", False, True),
        ("vfork, no death signal", False, False),
    ]
    for name, preexec, wrapper in ways * 2:
        started = time.perf_counter()
        for _ in range(count):
            await spawn(preexec, wrapper)
        print(f"{name}: {(time.perf_counter() - started) / count * 1000:.2f} ms per spawn")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args + [150, 200][len(args) :])))
