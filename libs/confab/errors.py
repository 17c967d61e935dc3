"""Typed errors that cross service boundaries and become the API's error bodies.

A handler raises one of these; the RPC layer carries its code over NATS; the
gateway turns it into the HTTP status and JSON body of the public contract.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ConfabError(Exception):
    """An error a client can act on. ``code`` is the API's snake_case error code."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Something went wrong on our side."

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(ConfabError):
    code = "invalid_request"
    status = 422
    default_message = "The request is not valid."


class BadRequest(InvalidRequest):
    """Malformed input that is not about one field (not JSON, wrong content type)."""

    status = 400


class MessageBlocked(InvalidRequest):
    """Automatic moderation refused a message (its rules say why, in ``details``)."""

    code = "message_blocked"
    default_message = "This message was not sent: it breaks the workspace's rules."


class Unauthorized(ConfabError):
    code = "unauthorized"
    status = 401
    default_message = "Missing or invalid credentials."


class Forbidden(ConfabError):
    code = "forbidden"
    status = 403
    default_message = "You are not allowed to do this."


class Banned(Forbidden):
    """The user is banned from the workspace: nothing they try to do is done."""

    code = "banned"
    default_message = "You are banned from this workspace."


class Muted(Forbidden):
    """The user may read this conversation but not post in it."""

    code = "muted"
    default_message = "You are muted in this conversation."


class Frozen(Forbidden):
    """The conversation is read-only."""

    code = "frozen"
    default_message = "This conversation is frozen: it is read-only."


class NotFound(ConfabError):
    code = "not_found"
    status = 404
    default_message = "Not found."


class Conflict(ConfabError):
    code = "conflict"
    status = 409
    default_message = "The request conflicts with the current state."


class PayloadTooLarge(ConfabError):
    code = "payload_too_large"
    status = 413
    default_message = "The request body is too large."


class UnsupportedMediaType(ConfabError):
    code = "unsupported_media_type"
    status = 415
    default_message = "This media type is not supported."


class RateLimited(ConfabError):
    code = "rate_limited"
    status = 429
    default_message = "Too many requests; slow down."

    def __init__(self, message: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(ConfabError):
    code = "unavailable"
    status = 503
    default_message = "A backing service is unavailable; try again shortly."

    def __init__(self, message: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


class InternalError(ConfabError):
    pass


ERRORS_BY_CODE: dict[str, type[ConfabError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        MessageBlocked,
        Unauthorized,
        Forbidden,
        Banned,
        Muted,
        Frozen,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        RateLimited,
        Unavailable,
        InternalError,
    )
}


def error_from_wire(code: str, message: str, details: dict[str, Any] | None) -> ConfabError:
    """Rebuild a typed error received over NATS."""
    cls = ERRORS_BY_CODE.get(code, InternalError)
    if cls in (RateLimited, Unavailable):
        err: ConfabError = cls(message, float((details or {}).get("retry_after", 1.0)))
    else:
        err = cls(message, details)
    return err
