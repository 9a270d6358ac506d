"""Every Prometheus family clipo-gql exports, defined once.

Families live in prometheus-client's process-wide registry (as its docs advise): the API and
its embedded worker (`dev`) then share one `/metrics`, and the process/GC families come with
it. Label values are bounded by construction: outcomes, phases, codes, route templates.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# Jobs last from well under a second (a remux of a short clip) to hours (a long transcode).
JOB_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)

VIDEOS_CREATED = Counter(
    "clipo_videos_created", "Videos accepted (uploaded or submitted by URL).", ["source"]
)
UPLOAD_BYTES = Counter("clipo_upload_bytes", "Bytes of uploaded video files received.")
URL_DOWNLOAD_BYTES = Counter(
    "clipo_url_download_bytes", "Bytes downloaded from submitted URLs by workers."
)

JOBS = Counter("clipo_jobs", "Processing jobs that ended, by outcome.", ["outcome"])
JOB_DURATION = Histogram(
    "clipo_job_duration_seconds",
    "Wall time of a processing job, from taking it to DONE or FAILED.",
    ["outcome"],
    buckets=JOB_BUCKETS,
)
JOB_PHASE = Histogram(
    "clipo_job_phase_seconds",
    "Wall time of each step of a job (download, probe, thumbnail, mp4, ladder, storyboard).",
    ["phase"],
    buckets=JOB_BUCKETS,
)
JOBS_RUNNING = Gauge("clipo_jobs_running", "Jobs this worker process is running now.")
QUEUE_DEPTH = Gauge(
    "clipo_queue_depth", "Jobs waiting in the queue, not yet taken (read from Redis at scrape)."
)
WORKERS = Gauge("clipo_workers", "Workers whose heartbeat is fresh (read from Redis at scrape).")

WEBSOCKET_CONNECTIONS = Gauge(
    "clipo_websocket_connections", "Websockets this API process holds open."
)
SUBSCRIPTIONS = Gauge("clipo_subscriptions", "GraphQL subscriptions running in this process.")
WEBSOCKET_MESSAGES = Counter(
    "clipo_websocket_messages_sent", "GraphQL websocket messages sent to clients."
)

HTTP_REQUESTS = Counter(
    "clipo_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "clipo_http_request_duration_seconds",
    "Time to answer an HTTP request (to the last body byte), by route template.",
    ["route"],
    buckets=HTTP_BUCKETS,
)
GRAPHQL_OPERATIONS = Counter(
    "clipo_graphql_operations",
    "GraphQL operations, by type and result (OK, or the first error's extensions.code).",
    ["type", "code"],
)
# Resumable uploads (tus/)
TUS_BYTES = Counter(
    "clipo_tus_bytes_received", "Bytes received by tus PATCH (and creation) requests."
)
TUS_UPLOADS = Counter(
    "clipo_tus_uploads",
    "Resumable uploads, by event (created, completed, expired, terminated, refused).",
    ["event"],
)
TUS_PATCH_DURATION = Histogram(
    "clipo_tus_patch_duration_seconds",
    "Time to answer a tus PATCH, by status class (2xx, 4xx, 5xx).",
    ["status"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
LIMIT_REFUSALS = Counter(
    "clipo_limit_refusals",
    "Requests refused by a per-owner or per-machine limit, by limit.",
    ["limit"],
)

# Webhooks (webhooks/): labels are bounded, never a URL, an owner or an id.
WEBHOOK_EVENTS = Counter(
    "clipo_webhook_events", "Webhook events dispatched to their endpoints, by type.", ["type"]
)
WEBHOOK_DELIVERIES = Counter(
    "clipo_webhook_deliveries",
    "Webhook delivery attempts, by outcome (delivered, retried, failed) and attempt number.",
    ["outcome", "attempt"],
)
WEBHOOK_LATENCY = Histogram(
    "clipo_webhook_delivery_latency_seconds",
    "From a webhook event to the 2xx of its endpoint, retries included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 100000),
)
WEBHOOK_PENDING = Gauge(
    "clipo_webhook_pending_deliveries",
    "Webhook deliveries not yet delivered or failed (counted by the workers' periodic pass).",
)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time one step of a job; a step that fails or is cancelled is timed too."""
    started = time.perf_counter()
    try:
        yield
    finally:
        JOB_PHASE.labels(name).observe(time.perf_counter() - started)


class ChildCpu(Collector):
    """CPU time of this process's finished children: ffmpeg and ffprobe, the only programs
    clipo-gql runs. The kernel adds a child's time when it is reaped, so a running transcode
    shows up when it ends; reading it at scrape costs nothing between scrapes."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        family = CounterMetricFamily(
            "clipo_ffmpeg_cpu_seconds",
            "CPU seconds (user and system) used by finished ffmpeg/ffprobe runs.",
            labels=["mode"],
        )
        family.add_metric(["user"], usage.ru_utime)
        family.add_metric(["system"], usage.ru_stime)
        yield family


REGISTRY.register(ChildCpu())
