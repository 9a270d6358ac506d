"""tus 1.0.0 (https://tus.io/protocols/resumable-upload): headers, versions, extensions, and
parsing of the request headers the protocol defines. No I/O here."""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clipo_gql.errors import BadUserInputError, PreconditionFailedError

VERSION = "1.0.0"
# Where the server lives: `POST /uploads` creates, `/uploads/{uploadId}` is one upload.
PATH = "/uploads"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration", "checksum")
# The algorithms of the checksum extension we verify, by their tus names.
CHECKSUM_ALGORITHMS: dict[str, str] = {"sha1": "sha1", "md5": "md5", "sha256": "sha256"}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# The request headers tus clients send, and the response headers they read (CORS).
REQUEST_HEADERS = (
    "Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset", "Upload-Checksum",
    "Upload-Concat", "Upload-Defer-Length", "Content-Type", "Authorization",
    "X-HTTP-Method-Override", "X-Requested-With",
)  # fmt: skip
RESPONSE_HEADERS = (
    "Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Tus-Resumable",
    "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm", "Clipo-Video-Id",
)  # fmt: skip
METHODS = ("POST", "HEAD", "PATCH", "DELETE", "OPTIONS")
# Upload-Metadata is small (a file name, a type): a cap keeps a client from sending megabytes.
MAX_METADATA_CHARS = 4096
_MAX_INTEGER_DIGITS = 19


def discovery_headers(max_size: int) -> dict[str, str]:
    """What an OPTIONS request learns (§ "OPTIONS")."""
    return {
        "Tus-Resumable": VERSION,
        "Tus-Version": VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(max_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def check_version(headers: Mapping[str, str]) -> None:
    """§ "Tus-Resumable": every request but OPTIONS carries a version we speak, else 412."""
    value = headers.get("tus-resumable")
    if value is None:
        raise PreconditionFailedError("Send the header `Tus-Resumable: 1.0.0` (tus 1.0.0)")
    if value.strip() != VERSION:
        raise PreconditionFailedError(
            f"This server speaks tus {VERSION} only; the request asked for {value.strip()[:32]!r}"
        )


def non_negative(headers: Mapping[str, str], name: str) -> int | None:
    """A header holding a non-negative integer (Upload-Length, Upload-Offset), or None."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_INTEGER_DIGITS:
        raise BadUserInputError(f"`{name}` must be a non-negative integer")
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """§ "Upload-Metadata": comma-separated `key base64value` pairs (the value may be absent).

    Keys are unique ASCII without spaces or commas; values are base64 (decoded as UTF-8,
    replacing what is not)."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA_CHARS:
        raise BadUserInputError(f"`Upload-Metadata` is longer than {MAX_METADATA_CHARS} characters")
    metadata: dict[str, str | None] = {}
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or not key.isascii() or len(parts) > 2 or key in metadata:
            raise BadUserInputError("`Upload-Metadata` is malformed: `key base64value,...`")
        if len(parts) == 1:
            metadata[key] = None
            continue
        try:
            decoded = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise BadUserInputError(
                f"`Upload-Metadata`: the value of {key!r} is not base64"
            ) from None
        metadata[key] = decoded.decode("utf-8", errors="replace")
    return metadata


@dataclass(frozen=True)
class Checksum:
    """§ "Checksum": `Upload-Checksum: <algorithm> <base64 digest>` of one PATCH's body."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return hashlib.new(CHECKSUM_ALGORITHMS[self.algorithm])


def parse_checksum(value: str | None) -> Checksum | None:
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        # The extension says 400 for an algorithm the server does not support.
        raise BadUserInputError(
            f"Unsupported checksum algorithm {algorithm[:16]!r}; use one of "
            + ", ".join(CHECKSUM_ALGORITHMS)
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadUserInputError("`Upload-Checksum`: the digest is not base64") from None
    return Checksum(algorithm, digest)


def http_date(moment: datetime) -> str:
    """RFC 7231 IMF-fixdate, as `Upload-Expires` carries it."""
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)
