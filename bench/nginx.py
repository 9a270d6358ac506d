"""Debian's nginx, private (its own prefix, config and port, run as whoever runs us), in two
roles:

- `nginx(ctx)`: the baselines. One worker process, like `clipo-gql dev` (one uvicorn process),
  so both sides get one core of the machine:
  - `PUT /upload/<name>` writes the request body to `<root>/upload/<name>` (the dav module: the
    body goes to a temp file in `client_body_temp_path`, then is renamed into place, as our
    uploads are written to `incoming/` and renamed into the video's folder);
  - `GET /<path>` sends `<root>/<path>` with sendfile (ranges included), the static baseline.
- `deployed(...)`: deploy/nginx.conf itself in front of API processes (the tests and the
  benchmarks through nginx), `render()`ed for loopback ports and local folders: the one config
  there is, with only its addresses, paths and worker count changed.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, Context, free_port

NGINX = "/usr/sbin/nginx"
MISSING = f"{NGINX} is missing: install Debian's nginx first (`apt-get install -y nginx`)"

CONFIG = """\
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    # Both sides log each request to a file (uvicorn's access log in `clipo-gql dev`).
    access_log {prefix}/access.log;
    # Every temp path inside the prefix: the compiled-in ones are under /var/lib/nginx.
    client_body_temp_path {root}/.body-temp;
    proxy_temp_path {prefix}/proxy-temp;
    fastcgi_temp_path {prefix}/fastcgi-temp;
    uwsgi_temp_path {prefix}/uwsgi-temp;
    scgi_temp_path {prefix}/scgi-temp;
    types {{
        video/mp4 mp4;
    }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /upload/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_in_file_only on;
            client_body_buffer_size {body_buffer};
        }}
        location / {{
        }}
    }}
}}
"""


DEPLOY_CONFIG = ROOT / "deploy" / "nginx.conf"
# deploy/nginx.conf's internal location: the api's ACCEL_REDIRECT_PREFIX in compose.yaml
# (tests/test_deploy.py holds the three together).
ACCEL_PREFIX = "/_media/"


class ConfigDrift(AssertionError):
    """deploy/nginx.conf no longer holds a line the renderer rewrites."""


def _once(text: str, line: str, replacement: str) -> str:
    if text.count(line) != 1:
        raise ConfigDrift(f"{DEPLOY_CONFIG}: expected `{line}` exactly once")
    return text.replace(line, replacement)


def render(*, port: int, upstreams: list[str], media: Path, prefix: Path, workers: int = 1) -> str:
    """deploy/nginx.conf for a private nginx: listening on 127.0.0.1:`port` (its `answers`
    server on a free one), proxying to the `upstreams` (host:port), sending files from `media`,
    its pid, logs, temp files and kept answers under `prefix`. Everything else (locations,
    headers, timeouts, limits) is the deployed file's."""
    text = DEPLOY_CONFIG.read_text()
    text = _once(text, "worker_processes auto;", f"{_user_line()}worker_processes {workers};")
    text = _once(text, "pid /var/run/nginx.pid;", f"pid {prefix}/nginx.pid;")
    text = _once(text, "error_log /dev/stderr warn;", f"error_log {prefix}/error.log warn;")
    text = _once(
        text, "access_log /dev/stdout main;", f"access_log {prefix}/access.log main;{_temp(prefix)}"
    )
    servers = "\n        ".join(f"server {upstream};" for upstream in upstreams)
    text = _once(text, "server api:8000;", servers)
    text = _once(text, "listen 8080;", f"listen 127.0.0.1:{port};")
    answers = free_port()
    text = _once(text, "listen 127.0.0.1:8081;", f"listen 127.0.0.1:{answers};")
    text = _once(text, "server 127.0.0.1:8081;", f"server 127.0.0.1:{answers};")
    cache = "proxy_cache_path /var/cache/nginx/clipo-answers "
    text = _once(text, cache, cache.replace("/var/cache/nginx", str(prefix)))
    return _once(text, "alias /data/media/;", f"alias {media.resolve()}/;")


def _temp(prefix: Path) -> str:
    # Every temp path inside the prefix: the compiled-in ones are under /var/lib/nginx.
    names = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    return "".join(f"\n    {name}_temp_path {prefix}/{name}-temp;" for name in names)


@dataclass
class Nginx:
    url: str
    root: Path
    """The document root: PUT bodies land in `root/upload/`, GET serves files under it."""
    prefix: Path
    proc: subprocess.Popen[bytes]

    def worker_pids(self) -> list[int]:
        """The worker processes (the master's children): they receive and send the bytes."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]


def _user_line() -> str:
    # As root nginx would switch its workers to `nobody`, who cannot read or write a private
    # workdir; as anyone else the directive is ignored (with a warning), so leave it out.
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def command(prefix: Path) -> list[str]:
    """nginx in the foreground with `prefix`/nginx.conf, as a non-root user can run it."""
    # -e: the compiled-in error log (/var/log/nginx) is opened before the config is read.
    conf, errors = prefix / "nginx.conf", prefix / "error.log"
    return [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(errors), "-g", "daemon off;"]


def _launch(prefix: Path, root: Path, port: int) -> Nginx:
    with (prefix / "stderr.log").open("wb") as out:
        proc = subprocess.Popen(
            command(prefix), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Nginx(url=f"http://127.0.0.1:{port}", root=root, prefix=prefix, proc=proc)


def _start(ctx: Context, body_buffer: str) -> Nginx:
    if not Path(NGINX).is_file():
        raise RuntimeError(MISSING)
    prefix = ctx.workdir / f"nginx-{uuid.uuid4().hex[:8]}"
    root = prefix / "root"
    # The body temp dir sits beside the PUT target so the final rename stays on one disk.
    for folder in (root / ".body-temp", root / "upload"):
        folder.mkdir(parents=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(
        CONFIG.format(
            user=_user_line(), prefix=prefix, root=root, port=port, body_buffer=body_buffer
        )
    )
    return _launch(prefix, root, port)


def _stop(server: Nginx, *, remove: bool = True) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # fast shutdown: workers exit at once
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only this nginx
            proc.wait()
    if remove:
        shutil.rmtree(server.prefix, ignore_errors=True)


def _failure(server: Nginx) -> str:
    logs = (server.prefix / name for name in ("stderr.log", "error.log"))
    text = "".join(log.read_text(errors="replace") for log in logs if log.is_file())
    return text[-2000:]


def _wait_listening(server: Nginx, sleep: float = 0.05) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    for _ in range(100):
        if server.proc.poll() is not None:
            code = server.proc.returncode
            raise RuntimeError(f"nginx exited with {code}: {_failure(server)}")
        if accepts(port):
            return
        time.sleep(sleep)
    raise RuntimeError(f"nginx did not listen on port {port}: {_failure(server)}")


@contextmanager
def deployed(
    folder: Path, upstreams: list[str], media: Path, *, workers: int = 1
) -> Iterator[Nginx]:
    """deploy/nginx.conf on a free loopback port in front of `upstreams` (host:port), sending
    files from `media`; its prefix is a new folder under `folder`, removed afterwards.
    `Nginx.root` is `media`."""
    if not Path(NGINX).is_file():
        raise RuntimeError(MISSING)
    prefix = folder / f"nginx-{uuid.uuid4().hex[:8]}"
    prefix.mkdir(parents=True)
    port = free_port()
    conf = render(port=port, upstreams=upstreams, media=media, prefix=prefix, workers=workers)
    (prefix / "nginx.conf").write_text(conf)
    server = _launch(prefix, media, port)
    try:
        _wait_listening(server)
        yield server
    finally:
        _stop(server, remove=False)  # the caller's folder: its logs outlive a failure


@asynccontextmanager
async def nginx(ctx: Context, *, body_buffer: str = "16k") -> AsyncIterator[Nginx]:
    """A private nginx on a free loopback port; stopped and its prefix removed afterwards.

    `body_buffer` is `client_body_buffer_size`: nginx writes a request body to its file in
    pieces of this size (16k is the default on 64-bit).
    """
    server = _start(ctx, body_buffer)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        for _ in range(100):
            if server.proc.poll() is not None:
                code = server.proc.returncode
                raise RuntimeError(f"nginx exited with {code}: {_failure(server)}")
            if accepts(port):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"nginx did not listen on port {port}: {_failure(server)}")
        yield server
    finally:
        _stop(server)
