"""Debian's nginx as a private baseline: its own prefix, config and port under ctx.workdir.

One worker process, like `clipo-gql dev` (one uvicorn process), so both sides get one core of
the machine. The server is configured for the two baselines:

- `PUT /upload/<name>` writes the request body to `<root>/upload/<name>` (the dav module: the
  body goes to a temp file in `client_body_temp_path`, then is renamed into place, as our
  uploads are written to `incoming/` and renamed into the video's folder);
- `GET /<path>` sends `<root>/<path>` with sendfile (ranges included), the static baseline.
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
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import Context, free_port

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


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _start(ctx: Context, body_buffer: str) -> Nginx:
    if not Path(NGINX).is_file():
        raise RuntimeError(MISSING)
    prefix = ctx.workdir / f"nginx-{uuid.uuid4().hex[:8]}"
    root = prefix / "root"
    # The body temp dir sits beside the PUT target so the final rename stays on one disk.
    for folder in (root / ".body-temp", root / "upload"):
        folder.mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        CONFIG.format(
            user=_user_line(), prefix=prefix, root=root, port=port, body_buffer=body_buffer
        )
    )
    with (prefix / "stderr.log").open("wb") as out:
        # -e: the compiled-in error log (/var/log/nginx) is opened before the config is read.
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
             "-g", "daemon off;"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return Nginx(url=f"http://127.0.0.1:{port}", root=root, prefix=prefix, proc=proc)


def _stop(server: Nginx) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # fast shutdown: workers exit at once
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only this nginx
            proc.wait()
    shutil.rmtree(server.prefix, ignore_errors=True)


def _failure(server: Nginx) -> str:
    logs = (server.prefix / name for name in ("stderr.log", "error.log"))
    text = "".join(log.read_text(errors="replace") for log in logs if log.is_file())
    return text[-2000:]


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
            if _accepts(port):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"nginx did not listen on port {port}: {_failure(server)}")
        yield server
    finally:
        _stop(server)
