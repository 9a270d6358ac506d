"""Expected failures, each with the `extensions.code` and HTTP status clients see.

Anything that is not a `ClipoError` is unexpected: it is logged with its context and
reaches clients as `INTERNAL` with a generic message (see `graphql_errors.py`).
"""

from __future__ import annotations

from typing import ClassVar

# What a client sees while MongoDB does not answer (pymongo's ConnectionFailure), anywhere.
DATABASE_UNAVAILABLE = "The database is unavailable right now; try again shortly"
STORAGE_UNAVAILABLE = "The media store is unavailable right now; try again shortly"
# What an upload or URL submission gets while MongoDB or Redis does not answer.
CANNOT_STORE = "The service cannot store or queue videos right now; try again shortly"


class ClipoError(Exception):
    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    # The status with `Accept: application/graphql-response+json` where the GraphQL over HTTP
    # draft asks for another than the one application/json clients have always had.
    graphql_response_status: ClassVar[int | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    @property
    def extensions(self) -> dict[str, object]:
        """What clients get in `extensions` besides `code`."""
        return {}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers of the answer when this ends a request before GraphQL runs."""
        return {}


class UnauthenticatedError(ClipoError):
    """No credential, or one that does not verify (expired, wrong key, revoked...)."""

    code = "UNAUTHENTICATED"
    http_status = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="clipo-gql"'}


class ForbiddenError(ClipoError):
    """A valid credential that may not do this."""

    code = "FORBIDDEN"
    http_status = 403


class QuotaExceededError(ClipoError):
    code = "QUOTA_EXCEEDED"
    http_status = 403


class BadUserInputError(ClipoError):
    code = "BAD_USER_INPUT"
    http_status = 400


class MutationOverGetError(BadUserInputError):
    """A mutation sent with GET: 405 for the draft's media type, 400 (as ever) for JSON."""

    graphql_response_status = 405


class NotAcceptableError(ClipoError):
    """`Accept` names no media type we produce (application/json, graphql-response+json)."""

    code = "BAD_USER_INPUT"
    http_status = 406


class NotFoundError(ClipoError):
    code = "NOT_FOUND"
    http_status = 404


class UnsupportedMediaError(ClipoError):
    """The file is not a video we accept, or it is out of the configured bounds."""

    code = "UNSUPPORTED_MEDIA"
    http_status = 415


class PayloadTooLargeError(ClipoError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class ForbiddenUrlError(ClipoError):
    code = "FORBIDDEN_URL"
    http_status = 400


class InvalidStateError(ClipoError):
    code = "INVALID_STATE"
    http_status = 409


class OffsetMismatchError(InvalidStateError):
    """A tus PATCH whose Upload-Offset is not where the upload is."""


class LockedError(InvalidStateError):
    """Another request is writing this resumable upload right now."""

    http_status = 423


class GoneError(NotFoundError):
    """A resumable upload that expired (its URL will soon be unknown altogether)."""

    http_status = 410


class PreconditionFailedError(BadUserInputError):
    """A tus request without a Tus-Resumable version we speak."""

    http_status = 412


class ChecksumMismatchError(BadUserInputError):
    """A tus chunk whose Upload-Checksum does not match its bytes: the chunk is discarded."""

    http_status = 460


class RateLimitedError(ClipoError):
    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)

    @property
    def extensions(self) -> dict[str, object]:
        return {"retryAfter": self.retry_after}

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailableError(ClipoError):
    """A dependency (Redis, MongoDB) did not answer; the client may try again."""

    code = "INTERNAL"
    http_status = 503


class InsufficientStorageError(ClipoError):
    """The media disk is nearly full: new videos are refused before they fill it."""

    code = "INTERNAL"
    http_status = 507


class ProcessingError(ClipoError):
    """ffmpeg/ffprobe failed or timed out on a file; the message is shown as `Video.error`."""

    code = "UNSUPPORTED_MEDIA"
    http_status = 422


def _codes(cls: type[ClipoError]) -> set[str]:
    return {cls.code}.union(*(_codes(sub) for sub in cls.__subclasses__()))


# Every `extensions.code` a client can see (metrics label errors by it, never by message).
CODES = frozenset(_codes(ClipoError) | {"BAD_USER_INPUT"})
