"""The production topology of compose.yaml as local processes: what `docker compose up` runs.

No Docker engine runs here, so each service is started as a process with the command and the
environment that compose.yaml gives it, read from the file itself:
- `api` and `worker`: their `command` and `environment` (the `x-app` anchor included), with
  the compose hostnames (`mongo:27017`, `redis:6379`), the published port (`8000:8000`) and
  the `media` volume's mount point mapped to local addresses and one shared local folder;
- `redis`: its `command` (the append-only file), plus a local port and folder;
- `nginx`: deploy/nginx.conf (the file its volume mounts) rendered for loopback, one in front of
  each api process (what compose's one nginx is to its one api), sending files from the shared
  folder: the public URLs, where media bytes come from (the api runs with
  ACCEL_REDIRECT_PREFIX, so it answers media routes with an empty X-Accel-Redirect);
- `mongo`: FerretDB (the suite's real MongoDB-wire server) in place of the `mongo` image;
- readiness: the `api` healthcheck's own command, with its port mapped.
What the tests add on top is listed in `TEST_ENVIRONMENT`, each with its reason.

Every process can be killed and started again on the same port, folder and data, as
compose's `restart: unless-stopped` does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import nginx as nginx_conf
from clipo_gql.auth.tokens import mint
from clipo_gql.devredis import answers, free_port
from clipo_gql.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Set for every app process on top of compose.yaml's environment.
from tests.webhook_receiver import ALLOWED_PORTS as RECEIVER_PORTS  # noqa: E402

TEST_ENVIRONMENT = {
    # A killed worker's job is taken over after this lease (30 s by default).
    "JOB_LEASE_SECONDS": "3",
    # URL submissions go to a file server on loopback, webhooks to receivers there.
    "URL_FETCH_ALLOW_PRIVATE": "true",
    "URL_FETCH_ALLOWED_PORTS": f"80,443,8080,8443,{RECEIVER_PORTS}",
    # The processes log at INFO; keep their output readable for a failure's report.
    "PYTHONUNBUFFERED": "1",
    # The tests' load comes from one owner and one address: above the per-owner defaults.
    "RATE_LIMIT_VIDEOS": "100000/minute",
    "MAX_ACTIVE_VIDEOS": "100000",
    "WS_MAX_CONNECTIONS_PER_CLIENT": "100000",
    # Workers' metrics on loopback only (each gets a free port in place of compose's 9101).
    "WORKER_METRICS_HOST": "127.0.0.1",
}
# What `docker compose` would take from the environment for compose.yaml's ${VAR:?...}.
COMPOSE_VARIABLES = {
    "AUTH_JWT_SECRET": "topology-jwt-secret-" + "x" * 32,
    "MEDIA_URL_SECRET": "topology-media-secret-" + "y" * 32,
    "METRICS_TOKEN": "topology-metrics-token-" + "z" * 32,
}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}` (which fails when unset)."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        if kind == "?":
            raise AssertionError(f"compose would refuse to start: {name}: {rest}")
        return rest if kind == "-" else ""

    return INTERPOLATION.sub(one, value)


# The variables of this test run that must not leak into the topology's processes.
OWN_VARIABLES = ("MONGODB_URL", "MONGODB_DATABASE", "REDIS_URL", "MEDIA_DIR", "QUEUE_NAME",
                 "REDIS_PREFIX", "PUBLIC_BASE_URL")  # fmt: skip


def ferretdb_binary() -> str | None:
    return os.environ.get("CLIPO_FERRETDB_BIN") or None


def load_compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return parsed


class Process:
    """One service: started, killed and started again with the same command and environment."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        ready: Callable[[Process], bool],
        *,
        ready_seconds: float = 30,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self._ready = ready
        self.ready_seconds = ready_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, wait: bool = True) -> None:
        assert not self.alive, f"{self.name} is running"
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.log.parent, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_seconds
        while not self._ready(self):
            if not self.alive:
                raise AssertionError(f"{self.name} exited during start-up:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not become ready:\n{self.tail()}")
            time.sleep(0.1)

    def output_since_start(self) -> str:
        with self.log.open("rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output_since_start().splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process (not its session: a killed worker's ffmpeg must die by itself)."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.kill(sig)
        self.start()


@dataclass
class Topology:
    folder: Path
    media: Path
    mongo: Process
    redis: Process
    apis: list[Process]
    workers: list[Process]
    api_urls: list[str]
    nginx: list[Process]  # nginx[i] in front of apis[i]
    public_urls: list[str]  # nginx[i]'s: the PUBLIC_BASE_URL of apis[i]
    mongodb_url: str
    redis_url: str
    database: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def apps(self) -> list[Process]:
        return [*self.apis, *self.workers]

    @property
    def everything(self) -> list[Process]:
        return [self.mongo, self.redis, *self.apps, *self.nginx]

    def token(self, subject: str = "tester", *, admin: bool = False) -> str:
        """A JWT the API processes accept (signed with compose's AUTH_JWT_SECRET)."""
        settings = Settings(auth_jwt_secret=COMPOSE_VARIABLES["AUTH_JWT_SECRET"])
        return mint(settings, subject, admin=admin, ttl_seconds=3 * 3600)

    @property
    def authorization(self) -> str:
        """The tests' one owner's `Authorization` value."""
        return f"Bearer {self.token()}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization}

    def ws_url(self, i: int) -> str:
        return self.api_urls[i].replace("http://", "ws://") + "/graphql"

    def ensure_running(self) -> None:
        """Start again whatever a test left stopped, database and Redis first."""
        for process in self.everything:
            if not process.alive:
                process.start()

    def stop(self) -> None:
        for process in reversed(self.everything):
            process.stop()


def _map_value(value: str, hosts: dict[str, str], mounts: dict[str, Path]) -> str:
    for target, local in mounts.items():
        if value == target or value.startswith(target + "/"):
            return str(local) + value[len(target) :]
    for compose_address, local_address in hosts.items():
        value = value.replace(compose_address, local_address)
    return value


def _app_command(command: list[str], port: int | None) -> list[str]:
    """compose's command with the executable from this environment and local host/port."""
    argv = [str(BIN / command[0]), *command[1:]]
    for i, arg in enumerate(argv[:-1]):
        if arg == "--host":
            argv[i + 1] = "127.0.0.1"
        elif arg == "--port":
            assert port is not None, "a --port in a service without a published port"
            argv[i + 1] = str(port)
    return argv


def _healthcheck(service: dict[str, Any], hosts: dict[str, str]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", test
    argv = [_map_value(arg, hosts, {}) for arg in test[1:]]
    if argv[0] == "python":
        argv[0] = sys.executable
    return argv


def _command_ok(argv: list[str]) -> Callable[[Process], bool]:
    def ready(_: Process) -> bool:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0

    return ready


def _logged(line: str) -> Callable[[Process], bool]:
    def ready(process: Process) -> bool:
        return line in process.output_since_start()

    return ready


def _redis_ready(url: str) -> Callable[[Process], bool]:
    return lambda _: answers(url)


def _mongo_ready(url: str) -> Callable[[Process], bool]:
    def ready(_: Process) -> bool:
        try:
            import pymongo

            client: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=500)
            try:
                client.admin.command("ping")
                return True
            finally:
                client.close()
        except Exception:
            return False

    return ready


def build(
    folder: Path,
    *,
    apis: int = 2,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    shared_media: bool = True,
) -> Topology:
    """The processes of compose.yaml (not started), `apis` × api and `workers` × worker.
    `shared_media` False: each app process gets a media folder of its own (object storage:
    no disk is shared, MEDIA_DIR is each one's scratch)."""
    binary = ferretdb_binary()
    assert binary, "the topology needs FerretDB: CLIPO_FERRETDB_BIN (./scripts/test sets it)"
    compose = load_compose()
    services = compose["services"]
    folder.mkdir(parents=True, exist_ok=True)
    media = folder / "media"
    media.mkdir(exist_ok=True)

    mongo_port, redis_port = free_port(), free_port()
    hosts = {"mongo:27017": f"127.0.0.1:{mongo_port}", "redis:6379": f"127.0.0.1:{redis_port}"}
    mongodb_url = f"mongodb://127.0.0.1:{mongo_port}"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    mongo = Process(
        "mongo",
        [binary, "-listen", hosts["mongo:27017"], "-dir", str(folder / "mongo-data"),
         "-log-level", "error"],
        dict(os.environ), folder / "mongo.log", _mongo_ready(mongodb_url),
    )  # fmt: skip
    redis_command = services["redis"]["command"]
    assert redis_command[0] == "redis-server", redis_command
    (folder / "redis-data").mkdir(exist_ok=True)
    redis = Process(
        "redis",
        [shutil.which("redis-server") or "redis-server", *redis_command[1:],
         "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(folder / "redis-data")],
        dict(os.environ), folder / "redis.log", _redis_ready(redis_url),
    )  # fmt: skip

    base_env = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}

    # Published by nginx (`8000:8080`): the address clients (and PUBLIC_BASE_URL) use.
    (published,) = services["nginx"]["ports"]
    public_port = published.split(":")[0]

    def app(service_name: str, index: int, port: int | None, public: int | None = None) -> Process:
        service = services[service_name]
        local_hosts = dict(hosts)
        for exposed in service.get("expose", []):
            local_hosts[f"127.0.0.1:{exposed}"] = f"127.0.0.1:{port}"
        if public is not None:
            local_hosts[f"localhost:{public_port}"] = f"127.0.0.1:{public}"
        mounts = {}
        for volume in service.get("volumes", []):
            name, target = volume.split(":")[:2]
            assert name == "media", f"unexpected volume {volume}"
            own = folder / f"scratch-{service_name}{index + 1}"
            mounts[target] = media if shared_media else own
        compose_env = {
            k: interpolate(str(v), COMPOSE_VARIABLES) for k, v in service["environment"].items()
        }
        env = {
            **base_env,
            **{k: _map_value(v, local_hosts, mounts) for k, v in compose_env.items()},
            **TEST_ENVIRONMENT,
            **(extra_env or {}),
        }
        if "WORKER_METRICS_PORT" in env:  # one port per container, many local processes
            env["WORKER_METRICS_PORT"] = str(free_port())
        name = f"{service_name}{index + 1}"
        if "healthcheck" in service:
            ready = _command_ok(_healthcheck(service, local_hosts))
        else:
            ready = _logged("worker ready")
        return Process(
            name, _app_command(service["command"], port), env, folder / f"{name}.log", ready
        )

    api_ports = [free_port() for _ in range(apis)]
    nginx_ports = [free_port() for _ in range(apis)]
    api_processes = [
        app("api", i, port, public)
        for i, (port, public) in enumerate(zip(api_ports, nginx_ports, strict=True))
    ]
    worker_processes = [app("worker", i, None) for i in range(workers)]
    nginx_processes = [
        _nginx(services["nginx"], folder / f"nginx{i + 1}", port, api_port, media)
        for i, (port, api_port) in enumerate(zip(nginx_ports, api_ports, strict=True))
    ]
    database = api_processes[0].env["MONGODB_DATABASE"]
    return Topology(
        folder=folder, media=media, mongo=mongo, redis=redis, apis=api_processes,
        workers=worker_processes, api_urls=[f"http://127.0.0.1:{p}" for p in api_ports],
        nginx=nginx_processes, public_urls=[f"http://127.0.0.1:{p}" for p in nginx_ports],
        mongodb_url=mongodb_url, redis_url=redis_url, database=database,
    )  # fmt: skip


def _nginx(service: dict[str, Any], prefix: Path, port: int, api_port: int, media: Path) -> Process:
    """compose's nginx: the config its volume mounts, rendered for loopback, in front of one
    api process, sending files from the shared media folder (mounted read-only there)."""
    config, files = service["volumes"]
    assert config.split(":")[:2] == ["./deploy/nginx.conf", "/etc/nginx/nginx.conf"], config
    assert files.split(":") == ["media", "/data/media", "ro"], files
    prefix.mkdir(parents=True, exist_ok=True)
    conf = nginx_conf.render(
        port=port, upstreams=[f"127.0.0.1:{api_port}"], media=media, prefix=prefix
    )
    (prefix / "nginx.conf").write_text(conf)
    return Process(
        prefix.name, nginx_conf.command(prefix), dict(os.environ), prefix / "nginx.log",
        lambda _: nginx_conf.accepts(port),
    )  # fmt: skip


@contextmanager
def running(
    folder: Path,
    *,
    apis: int = 2,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    shared_media: bool = True,
) -> Iterator[Topology]:
    topology = build(
        folder, apis=apis, workers=workers, extra_env=extra_env, shared_media=shared_media
    )
    try:
        topology.mongo.start()
        topology.redis.start()
        for process in [*topology.apps, *topology.nginx]:
            process.start(wait=False)
        for process in [*topology.apps, *topology.nginx]:
            process.wait_ready()
        yield topology
    finally:
        topology.stop()


def media_files(topology: Topology) -> list[Path]:
    return sorted(p for p in topology.media.rglob("*") if p.is_file())


def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
