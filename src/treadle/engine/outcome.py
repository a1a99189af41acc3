"""What the pipeline answers; each face maps these once (REST: api/actions.py, MCP: mcp/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from treadle.errors import ErrorCode
from treadle.store.gates import Approval, ApprovalPolicy


@dataclass(frozen=True, slots=True)
class RateStatus:
    limit: int
    remaining: int
    reset_at: int  # Unix seconds
    retry_after: int  # seconds; 0 when allowed

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


@dataclass(frozen=True, slots=True)
class Succeeded:
    output: Any
    duration_ms: int
    rate: RateStatus | None = None
    # `output` as compact JSON (UTF-8 text, not ASCII-escaped), encoded once when the pipeline
    # checked that it is JSON: faces reuse it instead of encoding the output again.
    encoded: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UpstreamFailed:
    error: str
    detail: Any
    duration_ms: int
    rate: RateStatus | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    code: ErrorCode
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    rate: RateStatus | None = None


@dataclass(frozen=True, slots=True)
class ApprovalPending:
    """Nothing ran: a person has to decide first (Human Gates)."""

    approval: Approval
    policy: ApprovalPolicy
    approval_url: str | None  # the hosted page, unless the policy keeps it dashboard-only
    rate: RateStatus | None = None

    @property
    def retry_key(self) -> str:
        return self.approval.approval_key


Outcome = Succeeded | UpstreamFailed | Refused | ApprovalPending
