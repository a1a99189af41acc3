"""The execute pipeline: one entry point, `Executor.execute(ExecuteRequest) -> Outcome`."""

from treadle.engine.outcome import (
    ApprovalPending,
    Outcome,
    RateStatus,
    Refused,
    Succeeded,
    UpstreamFailed,
)
from treadle.engine.pipeline import Executor
from treadle.engine.request import ExecuteRequest, Source

__all__ = [
    "ApprovalPending",
    "ExecuteRequest",
    "Executor",
    "Outcome",
    "RateStatus",
    "Refused",
    "Source",
    "Succeeded",
    "UpstreamFailed",
]
