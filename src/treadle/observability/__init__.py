"""Metrics, request logs and traces, each in one place: the HTTP middleware (`http.py`) for
requests, the pipeline's observers (`Executor.observers`) for tool calls."""

from __future__ import annotations

import os


def tracing_wanted() -> bool:
    """Whether the standard OTEL_* variables ask for traces (treadle.observability.tracing):
    an OTLP endpoint, or OTEL_TRACES_EXPORTER set; OTEL_SDK_DISABLED=true and
    OTEL_TRACES_EXPORTER=none win. Off by default."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
