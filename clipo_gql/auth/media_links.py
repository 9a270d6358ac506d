"""Signed media URLs: `?token=<expiry>.<signature>` on every URL of a video when auth is on.

The signature is HMAC-SHA256 with MEDIA_URL_SECRET over (video id, route kind, expiry), so a
token opens one route of one video until it expires, and the expiry cannot be changed
without breaking it. Compared in constant time. A player fetching a file in many Range
requests reuses the URL; the expiry is rounded up to a step of the lifetime, so the URLs of
one video stay the same for a while (the GraphQL results that carry them can be shared, and
caches and players see one URL), and a token lives at least MEDIA_URL_TTL_SECONDS.

Rotating MEDIA_URL_SECRET invalidates every URL handed out: clients ask for the video again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from enum import StrEnum

from bson import ObjectId

from clipo_gql.settings import Settings

STEPS_PER_TTL = 12


class Kind(StrEnum):
    """The route a token opens."""

    STREAM = "stream"
    DOWNLOAD = "download"
    METADATA = "metadata"
    METADATA_DOWNLOAD = "metadata-download"
    THUMBNAIL = "thumbnail"
    HLS = "hls"  # every playlist and segment of the ladder
    STORYBOARD = "storyboard"  # its WebVTT and sprite


class Verdict(StrEnum):
    OK = "ok"
    EXPIRED = "expired"
    INVALID = "invalid"  # tampered, another video's, another route's, or malformed


class MediaLinks:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_required
        secret = settings.media_url_secret
        # `dev --auth` without a secret: one per start (its URLs die with it).
        self._key = (
            secret.get_secret_value().encode() if secret is not None else secrets.token_bytes(32)
        )
        self.ttl = settings.media_url_ttl_seconds
        self._step = max(1, self.ttl // STEPS_PER_TTL)

    def expiry(self, at: float | None = None) -> int:
        moment = time.time() if at is None else at
        return math.ceil((moment + self.ttl) / self._step) * self._step

    def _signature(self, video_id: ObjectId | str, kind: Kind, expiry: int) -> str:
        message = f"{video_id}:{kind.value}:{expiry}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token(self, video_id: ObjectId | str, kind: Kind, expiry: int | None = None) -> str:
        expires = self.expiry() if expiry is None else expiry
        return f"{expires}.{self._signature(video_id, kind, expires)}"

    def url(self, base_url: str, path: str, video_id: str, kind: Kind, expiry: int) -> str:
        if not self.enabled:
            return f"{base_url}{path}"
        return f"{base_url}{path}?token={self.token(video_id, kind, expiry)}"

    @staticmethod
    def seconds_left(token: str) -> float:
        """How long a token `verify` found OK stays valid."""
        return int(token.partition(".")[0]) - time.time()

    def verify(self, token: str, video_id: ObjectId, kind: Kind) -> Verdict:
        raw_expiry, _, signature = token.partition(".")
        if not raw_expiry.isdigit() or len(raw_expiry) > 12 or not signature:
            return Verdict.INVALID
        expiry = int(raw_expiry)
        expected = self._signature(video_id, kind, expiry)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return Verdict.INVALID
        return Verdict.OK if time.time() < expiry else Verdict.EXPIRED
