"""The S3-compatible object store (`STORAGE_URL=s3://bucket/prefix`), through obstore.

obstore (Rust's object_store) was measured against aioboto3 on the same 1 GiB upload
(bench row 17c, bench/RESULTS.md) and kept. Keys are `<prefix>/videos/<id>/<name>`: the
local layout's paths under MEDIA_DIR, so a library moves between the two by copying
(`clipo-gql storage migrate`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from clipo_gql.storage.presign import presigned_get

if TYPE_CHECKING:
    from obstore import AsyncWritableFile

    from clipo_gql.settings import Settings

# Parts of a streamed upload: 8 MiB each, at most 4 in flight, so an upload holds about
# 40 MiB whatever its size (bench row 17c measures the RSS).
PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4
# Reads are streamed in chunks of about this much.
READ_CHUNK_BYTES = 1024 * 1024
DELETE_BATCH = 500


class ObjectStoreError(OSError):
    """The store refused or could not be reached: callers treat it as a disk's OSError."""


@contextlib.contextmanager
def _errors(key: str) -> Iterator[None]:
    try:
        yield
    except NotFoundError as exc:
        raise FileNotFoundError(f"no object {key}") from exc
    except BaseError as exc:
        raise ObjectStoreError(f"object store: {key}: {exc}") from exc


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str | None
    modified: datetime


class ObjectStore:
    """One bucket (and prefix) of an S3-compatible store."""

    def __init__(self, settings: Settings) -> None:
        assert settings.storage_url is not None
        bucket, _, prefix = settings.storage_url.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = settings.storage_url
        self.settings = settings
        secret = settings.aws_secret_access_key
        config: dict[str, Any] = {"region": settings.s3_region}
        if settings.s3_endpoint_url:
            config["endpoint"] = settings.s3_endpoint_url
            # Path-style: MinIO, SeaweedFS and most self-hosted stores have no bucket DNS.
            config["virtual_hosted_style_request"] = False
        if settings.aws_access_key_id and secret is not None:
            config["access_key_id"] = settings.aws_access_key_id
            config["secret_access_key"] = secret.get_secret_value()
        endpoint = settings.s3_endpoint_url or ""
        self._client: S3Store | None = S3Store(
            bucket,
            prefix=self.prefix or None,
            client_options={"allow_http": endpoint.startswith("http://")},
            **config,
        )

    def close(self) -> None:
        """Drop the client (Storage.close): any later call fails as the store being down."""
        self._client = None

    @property
    def store(self) -> S3Store:
        if self._client is None:
            raise ObjectStoreError("the object store client is closed")
        return self._client

    # -- reading ---------------------------------------------------------------------------

    async def info(self, key: str) -> ObjectInfo | None:
        try:
            with _errors(key):
                meta = await obstore.head_async(self.store, key)
        except FileNotFoundError:
            return None
        return ObjectInfo(meta["size"], meta["e_tag"], meta["last_modified"])

    async def read(self, key: str) -> bytes:
        """A small object whole (a playlist, a record); FileNotFoundError when missing."""
        with _errors(key):
            result = await obstore.get_async(self.store, key)
            return bytes(await result.bytes_async())

    async def stream(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Bytes `start` to `end` (exclusive; None: the end) of `key`, a chunk at a time."""
        with _errors(key):
            options: dict[str, Any] = {} if end is None else {"range": (start, end)}
            result = await obstore.get_async(self.store, key, options=options)  # type: ignore[arg-type]
            async for chunk in result.stream(min_chunk_size=READ_CHUNK_BYTES):
                yield bytes(chunk)

    async def download(self, key: str, dest: Path) -> None:
        """Copy `key` into the local file `dest` (written under a temporary name first)."""
        tmp = dest.with_name(f".{dest.name}.download")
        try:
            with _errors(key):
                result = await obstore.get_async(self.store, key)
                file = await asyncio.to_thread(open, tmp, "wb")
                try:
                    async for chunk in result.stream(min_chunk_size=PART_BYTES):
                        await asyncio.to_thread(file.write, chunk)
                finally:
                    await asyncio.to_thread(file.close)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)

    async def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        with _errors(prefix):
            async for batch in obstore.list(self.store, prefix, chunk_size=1000):
                found += [meta["path"] for meta in batch]
        return found

    async def folders(self, prefix: str) -> list[str]:
        """The names of the "folders" directly under `prefix` (S3's common prefixes)."""
        with _errors(prefix):
            listed = await obstore.list_with_delimiter_async(self.store, prefix)
        return [name.rstrip("/").rsplit("/", 1)[-1] for name in listed["common_prefixes"]]

    def presigned(self, key: str, response_headers: dict[str, str]) -> str:
        """A short-lived GET URL of `key` (STORAGE_REDIRECT_SECONDS)."""
        settings = self.settings
        secret = settings.aws_secret_access_key
        if settings.aws_access_key_id is None or secret is None:
            raise RuntimeError("presigned URLs need AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if settings.s3_endpoint_url:
            base = f"{settings.s3_endpoint_url}/{quote(self.bucket, safe='')}"
        else:
            base = f"https://{self.bucket}.s3.{settings.s3_region}.amazonaws.com"
        full = f"{self.prefix}/{key}" if self.prefix else key
        return presigned_get(
            base, full,
            access_key=settings.aws_access_key_id,
            secret_key=secret.get_secret_value(),
            region=settings.s3_region,
            expires_seconds=settings.storage_redirect_seconds,
            response_headers=response_headers,
        )  # fmt: skip

    # -- writing ---------------------------------------------------------------------------

    def writer(self, key: str) -> AsyncWritableFile:
        """A streamed upload of `key`: parts go out as the bytes are written (multipart above
        one part). Visible only after `close()`; an unclosed one never becomes an object."""
        return obstore.open_writer_async(
            self.store, key, buffer_size=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT
        )

    async def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        attributes = {"Content-Type": content_type} if content_type else None
        with _errors(key):
            await obstore.put_async(
                self.store, key, path, attributes=attributes,
                chunk_size=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT,
            )  # fmt: skip

    async def put_bytes(self, key: str, data: bytes) -> None:
        with _errors(key):
            await obstore.put_async(self.store, key, data)

    async def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), DELETE_BATCH):
            with contextlib.suppress(FileNotFoundError), _errors(keys[start]):
                await obstore.delete_async(self.store, keys[start : start + DELETE_BATCH])

    async def delete_prefix(self, prefix: str) -> None:
        await self.delete(await self.keys(prefix))
