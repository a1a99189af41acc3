"""OpenTelemetry traces (extra `treadle[otel]`), off unless the standard variables ask:
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, or
`OTEL_TRACES_EXPORTER` set to `otlp` or `console`; `OTEL_SDK_DISABLED=true` wins. The SDK
reads the rest itself (`OTEL_SERVICE_NAME`, headers, sampler...).

- One SERVER span per HTTP request (REST and MCP), parented by a W3C `traceparent` header,
  or for MCP by the request's `params._meta.traceparent` when the header is absent.
- Under it, one span per tool call with a child per pipeline step, built after the call from
  the pipeline's perf_counter marks (so the call path pays nothing for them).
- One CLIENT span per outbound HTTP request to a provider, whose `traceparent` it sends.

Attributes are labels only (method, route, status, source, integration, action, outcome,
host): never a header, token, query string, argument or output. Off, nothing is installed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx2
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Message, Receive, Scope

from treadle.engine.outcome import ApprovalPending, Refused, Succeeded, UpstreamFailed
from treadle.engine.pipeline import CallFinished

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from treadle.app import Gateway

_PROPAGATOR = TraceContextTextMapPropagator()
_SPAN_KEY = "treadle_span"
# An MCP body is read ahead (to find `_meta.traceparent`) only up to this size.
PEEK_BYTES = 1024 * 1024


def provider_from_env() -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "treadle")})
    )
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _outcome(call: CallFinished) -> str:
    match call.outcome:
        case Succeeded():
            return "success"
        case UpstreamFailed():
            return "upstream_failure"
        case ApprovalPending():
            return "approval_pending"
        case Refused():
            return call.outcome.code.value.lower()


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("treadle")

    # -- HTTP requests (the middleware) ---------------------------------------------------

    @contextmanager
    def request_span(self, scope: Scope, fields: dict[str, Any]) -> Iterator[Span]:
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in (b"traceparent", b"tracestate")
        }
        meta = scope.pop("treadle.meta_traceparent", None)
        if "traceparent" not in carrier and isinstance(meta, str):
            carrier["traceparent"] = meta
        parent = _PROPAGATOR.extract(carrier)
        method = scope["method"]
        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "treadle.request_id": fields["requestId"]},
        ) as span:
            yield span

    def finish_request(self, span: Span, method: str, route: str, status: int | str) -> None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

    async def read_meta(self, scope: Scope, receive: Receive) -> Receive:
        """For an MCP POST without a traceparent header: read its body ahead (bounded), note
        `params._meta.traceparent`, and hand the app a receive that replays it."""
        if any(name == b"traceparent" for name, _ in scope.get("headers", ())):
            return receive
        held: list[Message] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or size > PEEK_BYTES:
                break
        if size <= PEEK_BYTES and held and held[-1]["type"] == "http.request":
            traceparent = _meta_traceparent(b"".join(m.get("body", b"") for m in held))
            if traceparent is not None:
                scope["treadle.meta_traceparent"] = traceparent

        async def replay() -> Message:
            if held:
                return held.pop(0)
            return await receive()

        return replay

    # -- tool calls (Executor.observers) --------------------------------------------------

    def call_finished(self, call: CallFinished) -> None:
        # perf_counter marks to wall-clock nanoseconds: one reading of both clocks now.
        now_ns, now_perf = time.time_ns(), time.perf_counter()

        def ns(mark: float) -> int:
            return now_ns - round((now_perf - mark) * 1e9)

        request = call.request
        attributes: dict[str, str] = {
            "treadle.source": request.source.value,
            "treadle.integration": call.integration or "unknown",
            "treadle.action": call.action or "unknown",
            "treadle.outcome": _outcome(call),
        }
        if request.mcp_server_id:
            attributes["treadle.mcp_server_id"] = request.mcp_server_id
        span = self.tracer.start_span(
            "treadle.call", start_time=ns(call.started), attributes=attributes
        )
        if isinstance(call.outcome, Refused):
            span.set_status(Status(StatusCode.ERROR, call.outcome.code.value))
        parent = trace.set_span_in_context(span)
        steps = [
            ("prepare", call.started, call.prepared),
            ("connection", call.prepared, call.connected),
            ("admission", call.connected, call.admitted),
            ("run", call.admitted, call.finished if call.admitted else 0.0),
        ]
        for name, begin, end in steps:
            if begin and end:
                step = self.tracer.start_span(
                    f"treadle.step.{name}", context=parent, start_time=ns(begin)
                )
                step.end(end_time=ns(end))
        span.end(end_time=ns(call.finished))

    # -- outbound HTTP (the gateway's shared client) --------------------------------------

    def instrument(self, client: httpx2.AsyncClient) -> None:
        client.event_hooks["request"].append(self._on_request)
        client.event_hooks["response"].append(self._on_response)

    async def _on_request(self, request: httpx2.Request) -> None:
        span = self.tracer.start_span(
            f"HTTP {request.method}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": request.method,
                "server.address": request.url.host,
            },
        )
        request.extensions[_SPAN_KEY] = span
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            carrier: dict[str, str] = {}
            inject(carrier)
            request.headers.update(carrier)
        finally:
            otel_context.detach(token)

    async def _on_response(self, response: httpx2.Response) -> None:
        span = response.request.extensions.pop(_SPAN_KEY, None)
        if isinstance(span, Span):
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()


def _meta_traceparent(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    first = message[0] if isinstance(message, list) and message else message
    params = first.get("params") if isinstance(first, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    value = meta.get("traceparent") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None


def install(app: Starlette, gateway: Gateway, tracing: Tracing) -> None:
    """Traces on for this application: its requests (the middleware reads app.state), the
    gateway's calls (a pipeline observer) and its outbound HTTP (the shared client)."""
    app.state.tracing = tracing
    gateway.executor.observers.append(tracing.call_finished)
    tracing.instrument(gateway.http)
