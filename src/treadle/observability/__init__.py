"""Metrics, request logs and traces, each in one place: the HTTP middleware (`http.py`) for
requests, the pipeline's observers (`Executor.observers`) for tool calls."""
