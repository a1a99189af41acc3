"""`GET /metrics`: Prometheus text format (prometheus-client), one registry per gateway.

Labels are bounded: HTTP by route template (never a raw path), tool calls by source, MCP
server ID, integration and action as configured (never a name a caller made up: unknown ones
are `unknown`), outcome (`success`, `upstream_failure`, `approval_pending` or the refusal code
in lower case). No end user, argument or token is ever a label.

Access: with TREADLE_METRICS_TOKEN set, `Authorization: Bearer <token>` is required;
without it, only clients on loopback are answered (a scraper on the same host or through a
port-forward); TREADLE_METRICS=off turns the endpoint off (404).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.app import Gateway
from treadle.engine.outcome import ApprovalPending, Refused, Succeeded, UpstreamFailed
from treadle.engine.pipeline import CallFinished
from treadle.errors import ErrorCode

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STEPS = ("prepare", "connection", "admission", "run")
_LIMITS = {ErrorCode.RATE_LIMITED: "rate", ErrorCode.QUOTA_EXCEEDED: "quota"}


class _StateCollector(Collector):
    """Read at scrape time, so the call path pays nothing: MCP sessions, list_changed
    notifications, the database pool."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        sessions = GaugeMetricFamily("treadle_mcp_sessions_open", "Open MCP sessions")
        sessions.add_metric([], m.open_sessions())
        yield sessions
        sent = CounterMetricFamily(
            "treadle_mcp_list_changed_notifications",
            "Servers whose clients were sent notifications/tools/list_changed",
        )
        sent.add_metric([], m.list_changed_sent())
        yield sent
        pool = GaugeMetricFamily(
            "treadle_db_pool_connections", "Database pool connections", labels=["state"]
        )
        for state, count in m.pool().items():
            pool.add_metric([state], count)
        yield pool
        approvals = GaugeMetricFamily(
            "treadle_approvals", "Approvals by status (at the last scrape)", labels=["status"]
        )
        for status, count in m.approvals.items():
            approvals.add_metric([status], count)
        yield approvals


class Metrics:
    def __init__(self, gateway: Gateway, sessions: Any = None, hub: Any = None) -> None:
        """`sessions`: the MCP endpoint's SessionLedger; `hub`: the runtime's ResyncHub."""
        self.gateway = gateway
        self._sessions = sessions
        self._hub = hub
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "treadle_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "treadle_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.listen_streams = Gauge(
            "treadle_mcp_listen_streams",
            "Open MCP GET (listen) streams",
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "treadle_tool_calls",
            "Tool calls (REST execute and MCP tools/call) by outcome",
            ["source", "server", "integration", "action", "outcome"],
            registry=self.registry,
        )
        self.call_seconds = Histogram(
            "treadle_tool_call_duration_seconds",
            "Tool call latency, whole pipeline",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "treadle_pipeline_step_duration_seconds",
            "Latency of each pipeline step: prepare (configuration, partials, validation), "
            "connection, admission (approval gate, rate limit, quota), run (the provider)",
            ["step"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.limit_refusals = Counter(
            "treadle_limit_refusals",
            "Calls refused by a rate limit or the monthly quota",
            ["limit"],
            registry=self.registry,
        )
        self.list_changed_delay = Histogram(
            "treadle_mcp_list_changed_delay_seconds",
            "From a configuration change reaching this process to its tools/list_changed",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if hub is not None:
            hub.on_notified = self.list_changed_delay.observe
        self.approvals: dict[str, int] = {}
        self.registry.register(_StateCollector(self))
        # Label children resolved once per label set, not per call.
        self._steps = {step: self.step_seconds.labels(step) for step in STEPS}
        self._calls: dict[tuple[str, ...], Any] = {}
        self._requests: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._call_seconds: dict[str, Any] = {}

    def request_finished(self, route: str, method: str, status: str, seconds: float) -> None:
        """The middleware's one call per request: label children looked up once per label
        set (route templates, methods and statuses are few), then an increment and an
        observation."""
        key = (route, method, status)
        found = self._requests.get(key)
        if found is None:
            found = self._requests[key] = (
                self.http_requests.labels(route, method, status),
                self.http_seconds.labels(route, method),
            )
        found[0].inc()
        found[1].observe(seconds)

    # -- the pipeline's observer (Executor.observers) -------------------------------------

    def call_finished(self, call: CallFinished) -> None:
        request = call.request
        outcome = call.outcome
        match outcome:
            case Succeeded():
                label = "success"
            case UpstreamFailed():
                label = "upstream_failure"
            case ApprovalPending():
                label = "approval_pending"
            case Refused():
                label = outcome.code.value.lower()
                limit = _LIMITS.get(outcome.code)
                if limit is not None:
                    self.limit_refusals.labels(limit).inc()
        key = (
            request.source.value,
            request.mcp_server_id or "",
            call.integration or "unknown",
            call.action or "unknown",
            label,
        )
        counter = self._calls.get(key)
        if counter is None:
            counter = self._calls[key] = self.tool_calls.labels(*key)
        counter.inc()
        source = request.source.value
        timer = self._call_seconds.get(source)
        if timer is None:
            timer = self._call_seconds[source] = self.call_seconds.labels(source)
        timer.observe(call.finished - call.started)
        if call.prepared:
            self._steps["prepare"].observe(call.prepared - call.started)
        if call.connected:
            self._steps["connection"].observe(call.connected - call.prepared)
        if call.admitted:
            self._steps["admission"].observe(call.admitted - call.connected)
            self._steps["run"].observe(call.finished - call.admitted)

    # -- read at scrape time --------------------------------------------------------------

    def open_sessions(self) -> int:
        return 0 if self._sessions is None else int(self._sessions.open_sessions())

    def list_changed_sent(self) -> int:
        return 0 if self._hub is None else int(self._hub.notifications_sent)

    def pool(self) -> dict[str, int]:
        pool = self.gateway.store.db.engine.pool
        found: dict[str, int] = {}
        for state, method in (("in_use", "checkedout"), ("idle", "checkedin")):
            read = getattr(pool, method, None)
            if callable(read):
                found[state] = int(read())
        return found

    async def refresh(self) -> None:
        """The approvals by status: one grouped count, at scrape time only."""
        async with self.gateway.store.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT status, COUNT(*) FROM approvals GROUP BY status")
            )
            counted = {str(status): int(count) for status, count in rows}
        self.approvals = {
            status: counted.get(status, 0)
            for status in sorted({"pending", "approved", "rejected", "expired", *counted})
        }


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None or os.environ.get("TREADLE_METRICS", "").lower() == "off":
        return Response("Not found\n", status_code=404, media_type="text/plain")
    token = os.environ.get("TREADLE_METRICS_TOKEN", "")
    if token:
        presented = request.headers.get("authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            return Response(
                "A valid metrics token is required (Authorization: Bearer)\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": "Bearer"},
            )
    elif not _loopback(request):
        return Response(
            "Metrics answer loopback clients only unless TREADLE_METRICS_TOKEN is set\n",
            status_code=403,
            media_type="text/plain",
        )
    await metrics.refresh()
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
