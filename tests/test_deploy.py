"""compose.yaml, deploy/nginx.conf and the Dockerfile, checked by parsing: no Docker engine
runs here (tests/test_nginx.py runs that nginx.conf itself, tests/topology/ compose's processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.nginx import ACCEL_PREFIX
from clipo_gql.graphiql import ASSETS
from clipo_gql.limits import MULTIPART_OVERHEAD
from clipo_gql.settings import Settings
from clipo_gql.tus.protocol import PATH as TUS_PATH

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return parsed


def test_services_and_their_commands(compose: dict[str, Any]):
    services = compose["services"]
    assert set(services) == {"mongo", "redis", "api", "nginx", "worker"}
    assert services["api"]["command"][:2] == ["clipo-gql", "serve"]
    assert "0.0.0.0" in services["api"]["command"]
    # Clients reach the API through nginx only.
    assert "ports" not in services["api"]
    assert services["api"]["expose"] == ["8000"]
    assert services["nginx"]["ports"] == ["8000:8080"]
    assert services["nginx"]["image"].startswith("nginx:")
    assert services["worker"]["command"] == ["clipo-gql", "worker"]
    assert services["mongo"]["image"].startswith("mongo:")
    assert services["redis"]["image"].startswith("redis:")


def test_health_checks_and_start_order(compose: dict[str, Any]):
    services = compose["services"]
    for name in ("mongo", "redis", "api", "nginx"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/healthz" in services["nginx"]["healthcheck"]["test"]
    assert services["nginx"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "mongo": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }


def test_api_and_worker_share_media_and_data_is_kept(compose: dict[str, Any]):
    services = compose["services"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert services[name]["volumes"] == [f"media:{env['MEDIA_DIR']}"]
        assert env["MONGODB_URL"] == "mongodb://mongo:27017"
        assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert services["mongo"]["volumes"] == ["mongo-data:/data/db"]
    assert set(compose["volumes"]) == {"media", "mongo-data", "redis-data"}


def test_every_environment_variable_is_a_setting(compose: dict[str, Any]):
    known = {name.upper() for name in Settings.model_fields}
    for name in ("api", "worker"):
        unknown = set(compose["services"][name]["environment"]) - known
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"


def test_dockerfile_installs_ffmpeg_from_the_lockfile_and_drops_root():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    text = "\n".join(lines)
    assert lines[[i for i, line in enumerate(lines) if line.startswith("FROM")][0]].startswith(
        "FROM python:3.11-slim"
    )
    assert "ffmpeg" in text
    assert "uv sync --frozen --no-dev" in text
    users = [line for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] != "USER root"
    for copied in ("clipo_gql", "worker.py", "uv.lock"):
        assert copied in text


def test_the_image_has_graphiqls_files():
    """The image builds GraphiQL's npm files in a stage of their own and keeps only those the
    API serves: every one of them, or its /graphql page would say they are missing."""
    text = (ROOT / "Dockerfile").read_text()
    copied = text.split("cp --parents", 1)[1].split("/out/", 1)[0]
    npm = {asset.path for asset in ASSETS.values() if asset.npm}
    assert set(copied.replace("\\", " ").split()) == npm
    assert "COPY --from=graphiql /out/ /app/clipo_gql/graphiql/node_modules/" in text
    assert "clipo_gql/graphiql/node_modules" in (ROOT / ".dockerignore").read_text()
    assert text.strip().splitlines()[-2] == "FROM app"  # the last stage is the app's


def block(text: str, header: str) -> str:
    """The body of the nginx block `header { ... }` (its first occurrence)."""
    start = text.index(header + " {") + len(header) + 2
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start : i - 1]


def directives(body: str) -> list[str]:
    """The block's own directives (not those of blocks inside it), comments removed."""
    lines = [line.split("#", 1)[0].strip() for line in body.splitlines()]
    own, depth = [], 0
    for line in lines:
        if depth == 0 and line.endswith(";"):
            own.append(line.rstrip(";"))
        depth += line.count("{") - line.count("}")
    return own


@pytest.fixture(scope="module")
def nginx_conf() -> str:
    return (ROOT / "deploy" / "nginx.conf").read_text()


def test_nginx_sends_the_files_the_api_redirects_to(compose: dict[str, Any], nginx_conf: str):
    services = compose["services"]
    api_env, nginx = services["api"]["environment"], services["nginx"]
    prefix = api_env["ACCEL_REDIRECT_PREFIX"]
    assert prefix == ACCEL_PREFIX  # what the tests and benchmarks behind nginx set
    assert nginx["volumes"] == [
        "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro",
        f"media:{api_env['MEDIA_DIR']}:ro",
    ]
    internal = directives(block(nginx_conf, f"location {prefix}"))
    assert "internal" in internal
    assert f"alias {api_env['MEDIA_DIR']}/" in internal
    # The upstream is the api service on the port it listens on; nginx on the one published.
    assert "server api:8000" in directives(block(nginx_conf, "upstream api"))
    assert services["api"]["command"][-1] == "8000"
    server = directives(block(nginx_conf, "server"))
    assert f"listen {nginx['ports'][0].split(':')[1]}" in server
    # Behind nginx the client address comes from X-Forwarded-For: the API must believe it.
    assert api_env["FORWARDED_ALLOW_IPS"] == "*"
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for" in server


def test_nginx_passes_uploads_and_websockets_on(nginx_conf: str):
    server = directives(block(nginx_conf, "server"))
    (size,) = [d.split()[1] for d in server if d.startswith("client_max_body_size")]
    assert size.endswith("m")
    cap = Settings().max_upload_bytes + MULTIPART_OVERHEAD
    assert int(size[:-1]) * 1024**2 >= cap, "nginx would refuse uploads the API accepts"
    assert "proxy_http_version 1.1" in server
    assert "proxy_set_header Upgrade $http_upgrade" in server
    assert "proxy_set_header Connection $connection_upgrade" in server
    assert "proxy_set_header Host $http_host" in server  # the websocket Origin check
    for location in ("location = /graphql", f"location {TUS_PATH}"):
        own = directives(block(nginx_conf, location))
        assert "proxy_pass http://api" in own, location
        assert "proxy_request_buffering off" in own, location
        assert "proxy_read_timeout 1h" in own, location  # subscriptions, slow uploads
    assert "proxy_pass http://answers" in directives(block(nginx_conf, "location /"))


def test_nginx_keeps_only_the_answers_the_api_marks_shareable(nginx_conf: str):
    """The `answers` server (after the front one) keeps X-Accel-Redirect answers that carry
    X-Accel-Expires (routes.send_file), and none asked with a credential in a header."""
    assert "server 127.0.0.1:8081" in directives(block(nginx_conf, "upstream answers"))
    inner = nginx_conf[nginx_conf.index("listen 127.0.0.1:8081;") :]
    own = directives(block(inner, "location /"))
    assert "proxy_pass http://api" in own
    (ignored,) = [d.split()[1:] for d in own if d.startswith("proxy_ignore_headers")]
    assert {"Cache-Control", "Expires", "X-Accel-Redirect"} <= set(ignored)
    assert "X-Accel-Expires" not in ignored  # the API's say is the only one
    assert "proxy_pass_header X-Accel-Redirect" in own
    assert "proxy_cache_bypass $http_authorization" in own
    assert "proxy_no_cache $http_authorization" in own
    # Everything the front server sets is passed on unchanged, Range for proxied objects too.
    for name in ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-ID", "Range"):
        assert any(d.startswith(f"proxy_set_header {name} $http_") for d in own), name


def test_app_services_refuse_to_start_without_their_secrets(compose: dict[str, Any]):
    """serve/worker run with AUTH_MODE=required: compose stops with a message if the two
    secrets are not in the environment, instead of starting a process that refuses."""
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        for secret in ("AUTH_JWT_SECRET", "MEDIA_URL_SECRET"):
            assert env[secret].startswith(f"${{{secret}:?"), (name, env[secret])
