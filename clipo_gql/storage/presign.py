"""Presigned S3 GET URLs (AWS Signature Version 4, query-string form).

Our own because the download routes need `response-content-disposition` (and the media type)
in the signed query, which obstore's `sign` cannot add. The algorithm is AWS's, verified in
tests/test_storage.py against AWS's documented example and against the S3 server itself.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _quote(value: str) -> str:
    # RFC 3986 unreserved characters only, as SigV4 wants (quote's default keeps "/").
    return quote(value, safe="-_.~")


def presigned_get(
    base_url: str,
    key: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    expires_seconds: int,
    response_headers: dict[str, str] | None = None,
    at: datetime | None = None,
) -> str:
    """A URL that GETs `key` for `expires_seconds`. `base_url` is where the bucket's objects
    are: `https://bucket.s3.region.amazonaws.com` (virtual-hosted) or `http://host/bucket`."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/") + "/" + "/".join(_quote(piece) for piece in key.split("/"))
    query = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": str(expires_seconds),
        "X-Amz-SignedHeaders": "host",
        **(response_headers or {}),
    }
    canonical_query = "&".join(
        f"{_quote(name)}={_quote(value)}" for name, value in sorted(query.items())
    )
    canonical = "\n".join(
        ["GET", path, canonical_query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = f"AWS4{secret_key}".encode()
    for piece in (day, region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, piece.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{parts.netloc}{path}?{canonical_query}&X-Amz-Signature={signature}"
