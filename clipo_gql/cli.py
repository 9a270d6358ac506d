"""`clipo-gql dev | serve | worker | reindex | export-schema | token`."""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import secrets
import sys
from pathlib import Path

from pydantic import SecretStr

from clipo_gql import logs
from clipo_gql.auth.credentials import check_config
from clipo_gql.connections import MISSING_MONGODB, ConfigError
from clipo_gql.settings import Settings

log = logging.getLogger("clipo_gql")

GC_FIRST_GENERATION = 20_000
DEV_OWNER = "dev"
DEV_TOKEN_TTL = 12 * 3600

# The example page, when clipo-gql runs from a checkout (not from an installed wheel).
CHECKOUT_FRONTEND = Path(__file__).resolve().parent.parent / "frontend-example"


def _serve(settings: Settings, host: str, port: int, *, embedded: bool) -> None:
    import uvicorn

    from clipo_gql.app import create_app
    from clipo_gql.ws_protocol import WEBSOCKET_OPTIONS

    app = create_app(settings, embedded=embedded)
    # Fanning one event out to a thousand subscribers allocates in a burst, and Python's
    # default (a collection every 700 allocations) spent a seventh of that burst in the
    # cyclic GC; a larger first generation halved the spread of p99 latency (bench row 6).
    # What start-up built lives as long as the process: frozen, no collection walks it.
    gc.set_threshold(GC_FIRST_GENERATION, 20, 20)
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        # X-Forwarded-For is believed only from FORWARDED_ALLOW_IPS (default 127.0.0.1):
        # the per-address limits must not be dodged with a header.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="info",
        log_config=logs.uvicorn_config(settings),
        # Its protocol lets a fanned-out state be written to each socket without an ASGI
        # send (fanout.py).
        **WEBSOCKET_OPTIONS,
    )


def dev(settings: Settings, host: str, port: int, *, auth: bool = False) -> None:
    from clipo_gql.devredis import redis_for_dev

    with redis_for_dev(settings.redis_url) as redis_url:
        if redis_url != settings.effective_redis_url:
            log.warning(
                "Nothing answered at the default Redis: started a private one at %s", redis_url
            )
        settings = _dev_queue(settings).model_copy(
            update={"redis_url": redis_url, "frontend_dir": _dev_frontend(settings)}
        )
        if auth:
            settings = _dev_auth(settings)
        log.info("clipo-gql dev: API and worker on http://%s:%d/graphql", host, port)
        if settings.frontend_dir is not None:
            log.info("clipo-gql dev: the frontend example on http://%s:%d/", host, port)
        if auth:
            from clipo_gql.auth.tokens import mint

            token = mint(settings, DEV_OWNER, ttl_seconds=DEV_TOKEN_TTL)
            log.warning(
                "clipo-gql dev --auth: signed in as %r for %d h: http://%s:%d/#token=%s",
                DEV_OWNER, DEV_TOKEN_TTL // 3600, host, port, token,
            )  # fmt: skip
        _serve(settings, host, port, embedded=True)


def _dev_queue(settings: Settings) -> Settings:
    """On the stand-in, a queue and channels of this dev server's own (QUEUE_NAME and
    REDIS_PREFIX, where set, still win).

    Its videos live in its process: on the shared default queue another dev server (or a
    test run) on the same Redis would take its jobs, find no such video and drop them. The
    name comes from MEDIA_DIR, so one folder's queued jobs are found again after a restart.
    """
    if settings.mongodb_url:
        return settings
    tag = hashlib.sha256(str(settings.media_dir.resolve()).encode()).hexdigest()[:12]
    update: dict[str, object] = {}
    if "queue_name" not in settings.model_fields_set:
        update["queue_name"] = f"clipo-dev:{tag}:queue"
    if "redis_prefix" not in settings.model_fields_set:
        update["redis_prefix"] = f"clipo-dev:{tag}"
    settings = settings.model_copy(update=update)
    if update:
        log.info("clipo-gql dev: jobs on the queue %s", settings.queue_name)
    return settings


def _dev_auth(settings: Settings) -> Settings:
    """AUTH_MODE=required with secrets made up for this start where none are set."""
    from clipo_gql.auth.tokens import JwtVerifier

    update: dict[str, object] = {"auth_mode": "required"}
    if not JwtVerifier(settings).configured:
        update["auth_jwt_secret"] = SecretStr(secrets.token_urlsafe(32))
    if settings.media_url_secret is None:
        update["media_url_secret"] = SecretStr(secrets.token_urlsafe(32))
    return settings.model_copy(update=update)


def token(settings: Settings, subject: str, *, admin: bool, ttl: int) -> None:
    from clipo_gql.auth.tokens import mint

    if settings.auth_jwt_secret is None:
        raise SystemExit("clipo-gql token: set AUTH_JWT_SECRET (the key `serve` verifies with)")
    sys.stdout.write(mint(settings, subject, admin=admin, ttl_seconds=ttl) + "\n")


def _dev_frontend(settings: Settings) -> Path | None:
    if settings.frontend_dir is not None:
        return settings.frontend_dir
    if not (CHECKOUT_FRONTEND / "index.html").is_file():
        return None
    if not (CHECKOUT_FRONTEND / "node_modules" / "graphql-ws").is_dir():
        log.warning(
            "The frontend example needs its npm packages: run `npm ci` in %s (./scripts/dev does)",
            CHECKOUT_FRONTEND,
        )
    return CHECKOUT_FRONTEND


def worker(settings: Settings) -> None:
    from clipo_gql.tasks import run_worker

    run_worker(settings)


def reindex(settings: Settings, *, force: bool) -> int:
    import asyncio

    from clipo_gql import reindex as library
    from clipo_gql.storage import open_storage

    storage = open_storage(settings)
    if storage.remote is None and not storage.videos.is_dir():
        sys.stderr.write(f"clipo-gql reindex: no {storage.videos}: is MEDIA_DIR right?\n")
        return 2
    live = library.live_api_processes(storage)
    if live and not force:
        sys.stderr.write(
            f"clipo-gql reindex: {live} API process(es) use {settings.media_dir}: stop the API"
            " and worker processes first (or pass --force)\n"
        )
        return 2
    summary = asyncio.run(library.run(settings))
    sys.stdout.write("".join(f"reindex: {line}\n" for line in summary.lines()))
    return 0


def migrate(settings: Settings, target: str) -> int:
    import asyncio

    from pydantic import ValidationError

    from clipo_gql.storage.migrate import migrate as library

    try:
        Settings(storage_url=target)
    except ValidationError as exc:
        sys.stderr.write(f"clipo-gql storage migrate: {exc.errors()[0]['msg']}\n")
        return 2
    if not (settings.media_dir / "videos").is_dir():
        sys.stderr.write(f"clipo-gql storage migrate: no {settings.media_dir}/videos\n")
        return 2
    summary = asyncio.run(library(settings, target))
    sys.stdout.write("".join(f"migrate: {line}\n" for line in summary.lines()))
    return 1 if summary.mismatched else 0


def export_schema() -> None:
    from clipo_gql.schema import schema

    sys.stdout.write(schema.as_str() + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipo-gql", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("dev", "API and worker in one process, on embedded defaults"),
        ("serve", "the API process (uvicorn)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
        if name == "dev":
            sub.add_argument(
                "--auth", action="store_true", help="AUTH_MODE=required; prints a signed-in link"
            )
    commands.add_parser("worker", help="an arq worker process")
    reindexing = commands.add_parser(
        "reindex", help="rebuild the video documents from MEDIA_DIR (a lost database)"
    )
    reindexing.add_argument(
        "--force", action="store_true", help="run even while API processes use MEDIA_DIR"
    )
    storing = commands.add_parser("storage", help="the media store")
    storage_commands = storing.add_subparsers(dest="storage_command", required=True)
    migrating = storage_commands.add_parser(
        "migrate", help="copy MEDIA_DIR's library into an object store (resumable)"
    )
    migrating.add_argument("--to", required=True, metavar="s3://bucket/prefix")
    commands.add_parser("export-schema", help="print the GraphQL SDL")
    minting = commands.add_parser("token", help="print an HS256 JWT signed with AUTH_JWT_SECRET")
    minting.add_argument("--sub", required=True, help="the owner id")
    minting.add_argument("--admin", action="store_true", help="with the AUTH_ADMIN_ROLE role")
    minting.add_argument("--ttl", type=int, default=3600, help="seconds it is valid")
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        export_schema()
        return
    settings = Settings()
    if args.command == "token":
        token(settings, args.sub, admin=args.admin, ttl=args.ttl)
        return
    logs.setup(settings)
    if args.command == "storage":
        sys.exit(migrate(settings, args.to))
    if args.command != "dev" and not settings.mongodb_url:
        # The same check as connections.init_mongo, made before uvicorn/arq print tracebacks.
        parser.exit(2, f"clipo-gql {args.command}: {MISSING_MONGODB}\n")
    if settings.auth_mode is None:
        default = "required" if args.command != "dev" or args.auth else "off"
        settings = settings.model_copy(update={"auth_mode": default})
    if args.command == "dev":
        dev(settings, args.host, args.port, auth=args.auth or settings.auth_required)
        return
    if args.command == "reindex":
        sys.exit(reindex(settings, force=args.force))
    try:
        check_config(settings)
    except ConfigError as exc:
        parser.exit(2, f"clipo-gql {args.command}: {exc}\n")
    if not settings.auth_required:
        log.warning(
            "AUTH_MODE=off: every caller may see, change and delete every video of `anonymous`"
            " and no limit is per user. Do not expose this process to the internet."
        )
    if args.command == "serve":
        _serve(settings, args.host, args.port, embedded=False)
    else:
        worker(settings)


if __name__ == "__main__":
    main()
