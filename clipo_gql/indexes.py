"""Creating the documents' indexes: once per missing index, safe from several processes at once.

Every API and worker process creates the indexes at start. Beanie would send every declared
index to `createIndexes` each time, which MongoDB treats as a no-op for an index that exists,
but FerretDB 1.24 drops the connection on (a panic in its handler, seen as `AutoReconnect`).
So we list what exists and create only what is missing. Two processes starting together can
both find an index missing; MongoDB then builds it once and answers the second request as a
no-op, FerretDB may drop one of the two connections: a failed attempt is followed by listing
again, and what the other process made counts.

FerretDB 1.24 has no TTL indexes either (`expireAfterSeconds` is "not implemented"): there
the index is made without it, and what it would expire is removed by the code that relies
on it (the webhook log: webhooks/dispatch.py `expire_log`, in the workers' periodic pass).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from beanie import Document
from pymongo import IndexModel
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger(__name__)

ATTEMPTS = 5
NOT_IMPLEMENTED = 238


def _key(spec: Any) -> tuple[tuple[str, Any], ...]:
    # index_information() gives [(field, direction)]; the driver may hand back 1.0 for 1.
    return tuple((field, int(d) if isinstance(d, int | float) else d) for field, d in spec)


async def ensure_indexes(
    indexes: Mapping[type[Document], list[IndexModel]], *, ttl: bool = True
) -> None:
    """`ttl` False: TTL indexes are made as plain ones (their expiry left to our code)."""
    for model, wanted in indexes.items():
        if wanted:
            await _ensure(
                model.get_motor_collection(), wanted if ttl else [_without_ttl(i) for i in wanted]
            )


async def _ensure(collection: Any, wanted: list[IndexModel]) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        existing = {_key(info["key"]) for info in (await collection.index_information()).values()}
        missing = [i for i in wanted if _key(i.document["key"].items()) not in existing]
        if not missing:
            return
        try:
            await collection.create_indexes(missing)
            return
        except PyMongoError as exc:
            if _no_ttl_here(exc) and any(_ttl(i) for i in missing):
                log.info("%s: no TTL indexes on this server; our code expires", collection.name)
                wanted = [_without_ttl(i) for i in wanted]
                continue
            if attempt == ATTEMPTS:
                raise
            log.info("creating indexes of %s failed (%r); looking again", collection.name, exc)
            await asyncio.sleep(0.2 * attempt)


def _no_ttl_here(exc: PyMongoError) -> bool:
    return isinstance(exc, OperationFailure) and exc.code == NOT_IMPLEMENTED


def _ttl(index: IndexModel) -> bool:
    return "expireAfterSeconds" in index.document


def _without_ttl(index: IndexModel) -> IndexModel:
    options = {k: v for k, v in index.document.items() if k not in ("key", "expireAfterSeconds")}
    return IndexModel(list(index.document["key"].items()), **options)
