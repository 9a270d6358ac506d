"""The one place that reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    mongodb_url: str | None = None
    mongodb_database: str = "clipo"
    # None means "the default, and `dev` may start a private redis-server if nothing answers".
    redis_url: str | None = None
    media_dir: Path = Path("./media")
    max_upload_bytes: int = Field(default=2 * GiB, gt=0)
    public_base_url: str | None = None
    url_fetch_allow_private: bool = False
    url_fetch_allowed_ports: str = "80,443,8080,8443"
    allowed_origins: str = ""
    ffmpeg_binary: str = "ffmpeg"
    ffprobe_binary: str = "ffprobe"
    # Behind nginx (deploy/nginx.conf): media routes check access, then answer with
    # `X-Accel-Redirect: <prefix><path under MEDIA_DIR>` and nginx sends the bytes (sendfile,
    # Range, conditional requests). Unset: the API sends them itself.
    accel_redirect_prefix: str | None = None
    # Object storage (storage/s3.py): unset keeps every file under MEDIA_DIR (a local or shared
    # disk); `s3://bucket/prefix` keeps them in an S3-compatible store, and MEDIA_DIR is then
    # only each process's scratch space: API processes and workers share no disk.
    storage_url: str | None = None
    s3_endpoint_url: str | None = None  # unset: AWS S3 in S3_REGION
    s3_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    # With S3, media routes answer 302 to a presigned URL valid this long; false: the API
    # proxies the bytes itself (Range included), for stores the clients cannot reach.
    storage_redirect: bool = True
    storage_redirect_seconds: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    # Proxies (uvicorn's setting: addresses, networks or *) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed: only they may say which address a client has.
    forwarded_allow_ips: str = "127.0.0.1"

    # URL submissions (security.md, "URL ingestion")
    url_max_length: int = Field(default=2048, ge=16)
    url_fetch_max_redirects: int = Field(default=5, ge=0)
    url_fetch_connect_timeout_seconds: float = Field(default=10, gt=0)
    url_fetch_read_timeout_seconds: float = Field(default=30, gt=0)
    url_fetch_timeout_seconds: float = Field(default=1800, gt=0)

    # Worker
    worker_concurrency: int = Field(default=2, ge=1)
    job_timeout_seconds: int = Field(default=3600, ge=10)
    job_max_tries: int = Field(default=3, ge=1)
    # A running job's lock lasts this long and the job renews it every third of it, so the
    # job of a worker that died (SIGKILL, power loss) runs again within about this time.
    job_lease_seconds: float = Field(default=30, ge=1)
    # Workers queue unfinished videos whose job is missing (Redis lost its data) this often.
    requeue_interval_seconds: float = Field(default=60, gt=0)
    # In that same pass, video folders without a document older than this are removed (an API
    # process died between storing the file and the document). Far above the milliseconds
    # between the two, so a video being stored right now is never touched.
    orphan_grace_seconds: float = Field(default=600, ge=1)
    # arq polls Redis for new jobs; its 0.5 s default would dominate a short clip's latency.
    worker_poll_delay_seconds: float = Field(default=0.05, gt=0)
    queue_name: str = "clipo:queue"
    redis_prefix: str = "clipo"
    # The job monitor (ops/monitor.py): a worker missing three beats is gone.
    worker_heartbeat_seconds: float = Field(default=5, gt=0)
    # Prometheus: the API's `/metrics`, and a worker's own port (unset: a worker serves none).
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "0.0.0.0"
    # json: one object a line, with the video id and request id (logs.py)
    log_format: Literal["text", "json"] = "text"

    # ffmpeg/ffprobe bounds (security.md)
    probe_timeout_seconds: float = Field(default=30, gt=0)
    thumbnail_timeout_seconds: float = Field(default=60, gt=0)
    max_duration_seconds: float = Field(default=4 * 3600, gt=0)
    max_streams: int = Field(default=16, ge=1)
    max_dimension: int = Field(default=8192, ge=16)
    max_pixels: int = Field(default=36_000_000, ge=256)
    max_frame_rate: float = Field(default=240, gt=0)
    max_output_bytes: int = Field(default=8 * GiB, gt=0)

    # Adaptive streaming (hls/): the ladder's heights, highest first ("" turns HLS off), the
    # target segment length, and the storyboard sprite.
    hls_renditions: str = "1080,720,480,360"
    hls_segment_seconds: int = Field(default=6, ge=1, le=60)
    storyboard: bool = True

    # GraphQL surface
    graphql_introspection: bool = True
    graphql_max_depth: int = Field(default=12, ge=2)
    graphql_max_tokens: int = Field(default=2000, ge=50)
    graphql_max_aliases: int = Field(default=30, ge=1)
    ws_connection_init_timeout_seconds: float = Field(default=10, gt=0)
    ws_max_subscriptions: int = Field(default=100, ge=1)

    # Access control (auth/). None: the command decides (`dev` off, `serve`/`worker` required).
    auth_mode: Literal["off", "required"] | None = None
    auth_jwt_secret: SecretStr | None = None
    auth_jwt_public_key: str | None = None
    auth_jwks_url: str | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_admin_role: str = "clipo:admin"
    media_url_secret: SecretStr | None = None
    media_url_ttl_seconds: int = Field(default=3600, ge=60)

    # Limits per owner (per client address with auth off), shared through Redis
    rate_limit_videos: str = "60/minute"
    max_active_videos: int = Field(default=20, ge=1)
    quota_bytes: int | None = Field(default=None, gt=0)
    min_free_disk_bytes: int = Field(default=1 * GiB, ge=0)
    # Resumable uploads (tus/): an unfinished upload that received no byte for this long is
    # removed with its video; the lease of the lock that lets one PATCH at a time write it.
    upload_expiry_seconds: int = Field(default=86400, ge=1)
    upload_lock_lease_seconds: float = Field(default=30, ge=1)
    # Webhooks (webhooks/): a 2xx within the timeout is delivered, anything else is tried again
    # after each delay of the schedule (seconds), then FAILED. Each worker process delivers
    # up to `webhook_concurrency` at once, at most `webhook_endpoint_concurrency` to one
    # endpoint (across processes), so a slow receiver holds a few slots, not all of them.
    webhook_timeout_seconds: float = Field(default=10, gt=0, le=120)
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_concurrency: int = Field(default=50, ge=1)
    webhook_endpoint_concurrency: int = Field(default=4, ge=1)
    webhook_max_endpoints: int = Field(default=10, ge=1)
    webhook_log_retention_seconds: int = Field(default=30 * 86400, ge=60)
    # Events a crash left undispatched are dispatched by the workers' periodic pass after this.
    webhook_dispatch_grace_seconds: float = Field(default=30, ge=0)

    # Websockets held by one API process: per owner (per address before authenticating, or
    # with auth off) and in all.
    ws_max_connections_per_client: int = Field(default=100, ge=1)
    ws_max_connections: int = Field(default=10_000, ge=1)

    # A folder of static files served at `/` (the frontend example); `dev` picks the
    # checkout's frontend-example/ when this is unset.
    frontend_dir: Path | None = None
    # The node_modules folder holding GraphiQL's npm packages (graphiql/); unset: the one
    # `./scripts/setup` fills, clipo_gql/graphiql/node_modules.
    graphiql_assets_dir: Path | None = None

    @field_validator("media_dir")
    @classmethod
    def _absolute_media_dir(cls, value: Path) -> Path:
        # ffmpeg is handed `file:<absolute path>`; resolve once so every path we build is absolute.
        return value.expanduser().resolve()

    @field_validator("metrics_token")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        # compose passes `METRICS_TOKEN=` when unset: an empty token must not match `Bearer `.
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("hls_renditions")
    @classmethod
    def _heights(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip() and not (part.strip().isdigit() and 16 <= int(part) <= 8192):
                raise ValueError(f"{part.strip()!r} is not a height from 16 to 8192")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        for part in value.split(","):
            try:
                ok = float(part) >= 0
            except ValueError:
                ok = False
            if part.strip() and not ok:
                raise ValueError(f"{part.strip()!r} is not a number of seconds")
        return value

    @field_validator("accel_redirect_prefix")
    @classmethod
    def _accel_prefix(cls, value: str | None) -> str | None:
        # compose passes `ACCEL_REDIRECT_PREFIX=` to mean unset; nginx matches the location by
        # its leading and trailing slash, so a prefix without them is a configuration error.
        if not value or not value.strip():
            return None
        if not (value.startswith("/") and value.endswith("/")) or "?" in value:
            raise ValueError(f"{value!r} must be a path that starts and ends with /, e.g. /_media/")
        return value

    @field_validator("storage_url", "s3_endpoint_url")
    @classmethod
    def _storage_url(cls, value: str | None, info: Any) -> str | None:
        # compose passes `STORAGE_URL=` to mean unset.
        if not value or not value.strip():
            return None
        value = value.strip()
        if info.field_name == "storage_url":
            bucket = value.removeprefix("s3://").split("/", 1)[0]
            if not value.startswith("s3://") or not bucket:
                raise ValueError(f"{value!r} is not s3://bucket or s3://bucket/prefix")
        elif not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("aws_access_key_id", "aws_secret_access_key", mode="before")
    @classmethod
    def _no_empty_key(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("public_base_url")
    @classmethod
    def _strip_base_url(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @property
    def auth_required(self) -> bool:
        return self.auth_mode == "required"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    # Plain properties, not cached: `model_copy(update=...)` would keep a stale cached value.
    @property
    def allowed_ports(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.url_fetch_allowed_ports.split(",") if p.strip())

    @property
    def webhook_delays(self) -> list[float]:
        return [float(p) for p in self.webhook_retry_schedule.split(",") if p.strip()]

    @property
    def webhook_queue_name(self) -> str:
        # Their own queue: a backlog of deliveries never waits behind videos, nor they behind it.
        return f"{self.queue_name}:webhooks"

    @property
    def hls_heights(self) -> list[int]:
        return sorted({int(p) for p in self.hls_renditions.split(",") if p.strip()}, reverse=True)

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip())
