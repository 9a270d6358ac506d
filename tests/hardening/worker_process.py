"""A real `clipo-gql worker` process for the crash tests: the Worker class that command runs,
arq's signal handling, the real job function and pipeline.

The one difference: without MONGODB_URL there is no database two processes can share, so this
process starts the in-process stand-in and seeds it with the video document the test passes
in CLIPO_TEST_SEED (extended JSON), other documents in CLIPO_TEST_SEED_DOCUMENTS. What the
test then watches is what processes really share:
Redis (the queue, the job lock, the published status changes), the media folder and the
ffmpeg child. With MONGODB_URL set the seed is skipped and both sides use that server.
"""

from __future__ import annotations

import os
from typing import Any

from bson import json_util

from clipo_gql.connections import init_mongo
from clipo_gql.models import Video
from clipo_gql.settings import Settings
from clipo_gql.tasks import run_worker, worker_lifecycle


def main() -> None:
    settings = Settings()
    lifecycle = worker_lifecycle(settings, own_mongo=False, standalone=True)

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["mongo"] = await init_mongo(settings, allow_stand_in=True)
        seed = os.environ.get("CLIPO_TEST_SEED")
        if seed and not settings.mongodb_url:
            await Video.get_motor_collection().insert_one(json_util.loads(seed))
        # Other documents, by collection (the webhook tests: an endpoint and a delivery).
        documents = os.environ.get("CLIPO_TEST_SEED_DOCUMENTS")
        if documents and not settings.mongodb_url:
            database = Video.get_motor_collection().database
            for collection, docs in json_util.loads(documents).items():
                await database[collection].insert_many(docs)
        await lifecycle["on_startup"](ctx)

    run_worker(settings, on_startup=on_startup, on_shutdown=lifecycle["on_shutdown"])


if __name__ == "__main__":
    main()
