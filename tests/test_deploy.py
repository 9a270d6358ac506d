"""compose.yaml and the Dockerfile, checked by parsing: no Docker engine runs here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from clipo_gql.graphiql import ASSETS
from clipo_gql.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return parsed


def test_services_and_their_commands(compose: dict[str, Any]):
    services = compose["services"]
    assert set(services) == {"mongo", "redis", "api", "worker"}
    assert services["api"]["command"][:2] == ["clipo-gql", "serve"]
    assert "0.0.0.0" in services["api"]["command"]
    assert services["api"]["ports"] == ["8000:8000"]
    assert services["worker"]["command"] == ["clipo-gql", "worker"]
    assert services["mongo"]["image"].startswith("mongo:")
    assert services["redis"]["image"].startswith("redis:")


def test_health_checks_and_start_order(compose: dict[str, Any]):
    services = compose["services"]
    for name in ("mongo", "redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
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


def test_app_services_refuse_to_start_without_their_secrets(compose: dict[str, Any]):
    """serve/worker run with AUTH_MODE=required: compose stops with a message if the two
    secrets are not in the environment, instead of starting a process that refuses."""
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        for secret in ("AUTH_JWT_SECRET", "MEDIA_URL_SECRET"):
            assert env[secret].startswith(f"${{{secret}:?"), (name, env[secret])
