"""A private redis-server for `clipo-gql dev` when nothing answers at the default address."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from clipo_gql.settings import DEFAULT_REDIS_URL


def answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def private_redis(binary: str = "redis-server") -> Iterator[str]:
    """Run redis-server on a free loopback port for the duration of the block; yield its URL."""
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(
            f"Nothing answers at {DEFAULT_REDIS_URL} and `{binary}` is not on PATH: "
            "install redis-server (apt-get install redis-server) or set REDIS_URL"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="clipo-redis-") as workdir:
        proc = subprocess.Popen(
            [
                path,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 10
            while not answers(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the private redis-server did not start on port {port}")
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def redis_for_dev(configured: str | None) -> Iterator[str]:
    """The configured Redis; else the default one if it answers; else a private one."""
    if configured:
        yield configured
    elif answers(DEFAULT_REDIS_URL):
        yield DEFAULT_REDIS_URL
    else:
        with private_redis() as url:
            yield url
