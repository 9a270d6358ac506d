"""The GraphQL side of the job monitor: `queue`, for admins (everyone with AUTH_MODE=off)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from clipo_gql.errors import ForbiddenError
from clipo_gql.ops.monitor import WorkerInfo, queue_status
from clipo_gql.state import Context

Info = strawberry.Info[Context, None]


@strawberry.type(description="A worker whose heartbeat is fresh (it beats every few seconds).")
class WorkerStatus:
    id: str = strawberry.field(description="host:pid:random, unique per worker process.")
    host: str
    pid: int
    started_at: datetime
    last_seen_at: datetime = strawberry.field(description="Its last heartbeat.")
    running_video_ids: list[strawberry.ID]
    jobs_done: int = strawberry.field(description="Jobs it ended DONE since it started.")
    jobs_failed: int = strawberry.field(description="Jobs it ended FAILED since it started.")

    @classmethod
    def from_info(cls, info: WorkerInfo) -> WorkerStatus:
        return cls(
            id=info.id,
            host=info.host,
            pid=info.pid,
            started_at=info.started_at,
            last_seen_at=info.last_seen_at,
            running_video_ids=[strawberry.ID(v) for v in info.running_video_ids],
            jobs_done=info.jobs_done,
            jobs_failed=info.jobs_failed,
        )


@strawberry.type(description="The processing queue and the workers taking from it.")
class QueueStatus:
    queued: int = strawberry.field(description="Jobs waiting for a worker.")
    running: int = strawberry.field(description="Jobs the live workers are running.")
    workers: list[WorkerStatus]


@strawberry.type
class OpsQuery:
    @strawberry.field(
        description="The queue and each live worker (admins; everyone with AUTH_MODE=off)."
    )
    async def queue(self, info: Info) -> QueueStatus:
        app = info.context.app
        if app.settings.auth_required and not info.context.principal.admin:
            raise ForbiddenError("Only admins may see the queue")
        status = await queue_status(app.redis, app.settings)
        return QueueStatus(
            queued=status.queued,
            running=status.running,
            workers=[WorkerStatus.from_info(w) for w in status.workers],
        )
