"""OpenTelemetry traces, checked with the SDK's in-memory exporter: a REST call's span under
the caller's traceparent, the call and its steps under it, the outbound HTTP request carrying
the trace onward; MCP's `_meta.traceparent`; no secret or input value as an attribute."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from treadle.http_app import build_http_app
from treadle.observability import tracing, tracing_wanted

from conftest import Api
from loopback import serve

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    yield found
    found.clear()


@pytest.fixture
async def provider_echo() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def echo(request: Request) -> Response:
        seen.append(request.headers.get("traceparent", ""))
        return JSONResponse({"ok": True})

    async with serve(Starlette(routes=[Route("/echo", echo, methods=["GET"])])) as port:
        yield port, seen


def traced(api: Api, exporter: InMemorySpanExporter) -> httpx2.AsyncClient:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_http_app(api.gateway)
    tracing.install(app, api.gateway, tracing.Tracing(provider))
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app),
        base_url="http://127.0.0.1:8400",
        headers={"Authorization": f"Bearer {api.api_key}"},
    )


async def test_rest_call_is_traced_to_the_provider_and_beyond(
    api: Api, exporter: InMemorySpanExporter, provider_echo: tuple[int, list[str]]
) -> None:
    port, seen = provider_echo
    await api.configure("http", settings={"allowPrivateNetwork": True})
    async with traced(api, exporter) as client:
        answer = await client.post(
            "/api/v1/actions/execute",
            json={
                "workspaceId": api.workspace_id,
                "integrationName": "http",
                "actionName": "send_request",
                "input": {"url": f"http://127.0.0.1:{port}/echo?apikey=hush-secret-value"},
            },
            headers={"traceparent": PARENT},
        )
    assert answer.status_code == 200, answer.text
    spans = {span.name: span for span in exporter.get_finished_spans()}
    request = spans["POST /api/v1/actions/execute"]
    call = spans["treadle.call"]
    outbound = spans["HTTP GET"]
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert call.parent is not None
    assert call.parent.span_id == request.context.span_id
    assert call.attributes is not None
    assert call.attributes["treadle.outcome"] == "success"
    assert call.attributes["treadle.action"] == "send_request"
    steps = {n for n in spans if n.startswith("treadle.step.")}
    assert steps == {f"treadle.step.{s}" for s in ("prepare", "connection", "admission", "run")}
    for name in steps:
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == call.context.span_id
    assert outbound.context.trace_id == request.context.trace_id
    # The provider received the trace: its parent is the outbound span.
    assert seen == [f"00-{TRACE_ID}-{outbound.context.span_id:016x}-01"]
    for span in exporter.get_finished_spans():
        text = repr(dict(span.attributes or {}))
        assert "hush-secret-value" not in text
        assert api.api_key not in text


async def test_mcp_meta_traceparent_parents_the_request_span(
    api: Api, exporter: InMemorySpanExporter
) -> None:
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "t"})
    server, token = created.json()["server"]["id"], created.json()["token"]
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
            "_meta": {"traceparent": PARENT},
        },
    }
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_http_app(api.gateway)
    tracing.install(app, api.gateway, tracing.Tracing(provider))
    transport = httpx2.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8400") as client,
    ):
        answer = await client.post(
            f"/mcp/{server}",
            json=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert answer.status_code == 200, answer.text
    request = next(s for s in exporter.get_finished_spans() if s.name == "POST /mcp/{server_id}")
    assert f"{request.context.trace_id:032x}" == TRACE_ID


def test_traces_are_off_without_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert not tracing_wanted()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing_wanted()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing_wanted()


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_an_mcp_tool_call_is_traced_to_the_provider(
    api: Api, exporter: InMemorySpanExporter, provider_echo: tuple[int, list[str]], era: str
) -> None:
    """From the MCP request's traceparent through the call and its steps to the provider's
    HTTP request, in both protocol eras (the handshake era runs handlers in the session's
    own task, not the request's)."""
    from bench.rawmcp import RawSession

    port, seen = provider_echo
    await api.configure("http", settings={"allowPrivateNetwork": True})
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "t"})
    server, token = created.json()["server"]["id"], created.json()["token"]
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_http_app(api.gateway)
    tracing.install(app, api.gateway, tracing.Tracing(provider))
    transport = httpx2.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8400", headers={"traceparent": PARENT}
        ) as client,
    ):
        session = await RawSession(client, f"/mcp/{server}", era, token).open()
        exporter.clear()
        result = await session.call(
            "http__send_request", {"url": f"http://127.0.0.1:{port}/echo", "method": "GET"}
        )
        await session.close()
    assert not result.get("isError"), result
    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "POST /mcp/{server_id}")
    call = next(s for s in spans if s.name == "treadle.call")
    outbound = next(s for s in spans if s.name == "HTTP GET")
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert call.parent is not None
    assert call.parent.span_id == request.context.span_id
    assert outbound.context.trace_id == request.context.trace_id
    assert seen[-1] == f"00-{TRACE_ID}-{outbound.context.span_id:016x}-01"
