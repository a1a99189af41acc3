"""One root exception, a few families, and the one table of documented error codes.

Every face (REST, MCP) maps these once: REST through `ErrorCode.status`, MCP through
`treadle.mcp.results`. A message is a human sentence; `extra` carries documented extra fields
(`retryAfter`, `current`, `limit`, `plan`, ...).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    NO_UPDATES = "NO_UPDATES"
    UNAUTHORIZED = "UNAUTHORIZED"
    SCOPE_DENIED = "SCOPE_DENIED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    DUPLICATE = "DUPLICATE"
    ALIAS_CONFLICT = "ALIAS_CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    INTEGRATION_NOT_FOUND = "INTEGRATION_NOT_FOUND"
    ACTION_NOT_ALLOWED = "ACTION_NOT_ALLOWED"
    ACTION_FAILED = "ACTION_FAILED"
    CONNECTION_REQUIRED = "CONNECTION_REQUIRED"
    CONNECTION_NOT_FOUND = "CONNECTION_NOT_FOUND"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_SESSIONS = "TOO_MANY_SESSIONS"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    ACTION_BLOCKED = "ACTION_BLOCKED"
    APPROVAL_REJECTED = "APPROVAL_REJECTED"
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    APPROVAL_NOT_PENDING = "APPROVAL_NOT_PENDING"
    IDEMPOTENCY_KEY_MISMATCH = "IDEMPOTENCY_KEY_MISMATCH"
    IDEMPOTENCY_KEY_IN_USE = "IDEMPOTENCY_KEY_IN_USE"
    FORBIDDEN = "FORBIDDEN"
    IDENTITY_PROVIDER_UNAVAILABLE = "IDENTITY_PROVIDER_UNAVAILABLE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.NO_UPDATES: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.SCOPE_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.DUPLICATE: 409,
    ErrorCode.ALIAS_CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INTEGRATION_NOT_FOUND: 400,
    ErrorCode.ACTION_NOT_ALLOWED: 403,
    ErrorCode.ACTION_FAILED: 400,
    ErrorCode.CONNECTION_REQUIRED: 400,
    ErrorCode.CONNECTION_NOT_FOUND: 400,
    ErrorCode.CONNECTION_ERROR: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_SESSIONS: 429,
    ErrorCode.QUOTA_EXCEEDED: 403,
    ErrorCode.ACTION_BLOCKED: 403,
    ErrorCode.APPROVAL_REJECTED: 403,
    ErrorCode.APPROVAL_EXPIRED: 403,
    ErrorCode.APPROVAL_NOT_PENDING: 409,
    ErrorCode.IDEMPOTENCY_KEY_MISMATCH: 422,
    ErrorCode.IDEMPOTENCY_KEY_IN_USE: 409,
    ErrorCode.FORBIDDEN: 403,
    # An identity provider's or external authorization server's documents could not be read.
    ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE: 502,
    # The database could not be reached (store/outage.py): nothing ran; retry shortly.
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}


class TreadleError(Exception):
    """Root of every exception treadle raises on purpose."""


class SetupError(TreadleError):
    """The gateway cannot start as configured (say, a database URL whose driver is not
    installed). The message is one line for the operator; the CLI prints it, no traceback."""


class StaleConfiguration(TreadleError):
    """A request served at an assumed configuration version (the newest this process knew,
    not read for it) found a newer one before anything it did depended on the difference:
    nothing was counted, recorded or answered, and its face serves it again at `version`.
    Never reaches a caller."""

    def __init__(self, version: int) -> None:
        super().__init__(f"the configuration moved to version {version}")
        self.version = version


class Refusal(TreadleError):
    """A request refused with a documented code; nothing was changed."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class ValidationFailed(Refusal):
    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        if field is not None:
            extra["field"] = field
        super().__init__(ErrorCode.VALIDATION_ERROR, message, **extra)


class NotFound(Refusal):
    def __init__(self, what: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, f"{what} not found")


class ActionRuntimeError(TreadleError):
    """Raised by an action's `run` when it could not do its work (bad host, crash, timeout).

    Becomes 400 ACTION_FAILED. `details` must not contain secrets.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UpstreamError(TreadleError):
    """Raised by an action when the third-party service reported an error.

    Becomes `{"success": false, "output": {"error", "detail"}}` with HTTP 200 (see `/docs`).
    """

    def __init__(self, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.error = error
        self.detail = detail


class ConnectionCredentialsError(TreadleError):
    """The connection's credentials were refused upstream; the user must re-authenticate."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
