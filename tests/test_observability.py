"""`GET /metrics` (Prometheus text, bounded labels, token or loopback) and the request log
line (request id, refusal codes, 401 reasons, MCP method and tool; JSON with --log-format)."""

from __future__ import annotations

import json
import logging

import httpx2
import pytest
import sqlalchemy as sa
from prometheus_client.exposition import generate_latest

from treadle.app import Gateway
from treadle.http_app import build_http_app
from treadle.mcp.binding import Binding
from treadle.mcp.runtime import McpRuntime
from treadle.observability.logs import JsonFormatter
from treadle.observability.metrics import Metrics
from treadle.store import ChangeEvent

from conftest import Api

pytestmark = pytest.mark.anyio


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
    }


async def test_metrics_count_calls_and_requests_by_template(api: Api) -> None:
    await api.configure(settings={"persistence": {"scope": "workspace"}})
    ran = await api.execute(integrationName="kv-store", actionName="get", input={"key": "k"})
    assert ran.status_code == 200, ran.text
    await api.execute(integrationName="kv-store", actionName="no-such-action", input={})
    await api.get(f"/workspaces/{api.workspace_id}")
    scraped = await api.client.get("/metrics", headers={"Authorization": ""})
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    calls = _samples(text, "treadle_tool_calls_total")
    assert any('action="get"' in k and 'outcome="success"' in k for k in calls)
    # An action nobody configured is never a label: the call counts under `unknown`.
    assert not any("no-such-action" in k for k in calls)
    assert any('action="unknown"' in k and 'outcome="not_found"' in k for k in calls)
    requests = _samples(text, "treadle_http_requests_total")
    assert any('route="/api/v1/workspaces/{workspace_id}"' in k for k in requests)
    assert api.workspace_id not in text
    assert "treadle_pipeline_step_duration_seconds_bucket" in text
    assert 'treadle_approvals{status="pending"} 0.0' in text
    assert "treadle_mcp_sessions_open 0.0" in text
    assert "treadle_db_pool_connections" in text


async def test_metrics_need_the_token_when_one_is_set(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_METRICS_TOKEN", "s3cret-metrics")
    transport = httpx2.ASGITransport(app=build_http_app(gateway))
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
        assert right.status_code == 200
        assert "treadle_http_requests_total" in right.text
    monkeypatch.setenv("TREADLE_METRICS", "off")
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        off = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
        assert off.status_code == 404


async def test_metrics_without_a_token_answer_loopback_only(gateway: Gateway) -> None:
    transport = httpx2.ASGITransport(app=build_http_app(gateway), client=("10.1.2.3", 4000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 403


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "treadle.access" and hasattr(r, "fields")
    ]


async def test_log_line_names_request_id_refusal_code_and_401_reason(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="treadle.access")
    answer = await api.get("/workspaces/missing", headers={"X-Request-Id": "req-123"})
    assert answer.headers["x-request-id"] == "req-123"
    await api.client.get(
        "/api/v1/workspaces", headers={"Authorization": "Bearer tk_not-a-real-key-at-all"}
    )
    await api.client.get("/api/v1/workspaces", headers={"Authorization": ""})
    expiring = await api.post("/api-keys", {"name": "soon", "expiresAt": "2099-01-01T00:00:00Z"})
    assert expiring.status_code == 201, expiring.text
    async with api.gateway.store.db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE api_keys SET expires_at = :past WHERE id = :id"),
            {"past": "2000-01-01T00:00:00.000Z", "id": expiring.json()["apiKey"]["id"]},
        )
    await api.client.get(
        "/api/v1/workspaces", headers={"Authorization": f"Bearer {expiring.json()['token']}"}
    )
    lines = _access(caplog)
    assert lines[0]["requestId"] == "req-123"
    assert lines[0]["error"] == "NOT_FOUND"
    assert lines[0]["route"] == "/api/v1/workspaces/{workspace_id}"
    assert lines[1]["authReason"] == "invalid_token"
    assert lines[1]["error"] == "UNAUTHORIZED"
    assert lines[2]["authReason"] == "missing"
    assert lines[4]["authReason"] == "expired"
    generated = str(lines[1]["requestId"])
    assert len(generated) == 16
    formatted = [JsonFormatter().format(r) for r in caplog.records if r.name == "treadle.access"]
    assert all("tk_not-a-real-key" not in line for line in formatted)
    parsed = json.loads(formatted[1])
    assert parsed["authReason"] == "invalid_token"
    assert parsed["status"] == 401


async def test_json_log_line_of_mcp_names_method_tool_and_reason(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_LOG_FORMAT", "json")
    caplog.set_level(logging.INFO, logger="treadle.access")
    app = build_http_app(api.gateway)
    transport = httpx2.ASGITransport(app=app)
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "logged"})
    server, token = created.json()["server"]["id"], created.json()["token"]
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "kv_store_get", "arguments": {"key": "secret-argument"}},
    }
    mcp_headers = {"Accept": "application/json, text/event-stream"}
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8400") as client,
    ):
        opened = await client.post(
            f"/mcp/{server}",
            json=initialize,
            headers={**mcp_headers, "Authorization": f"Bearer {token}"},
        )
        assert opened.status_code == 200, opened.text
        await client.post(
            f"/mcp/{server}",
            json=call,
            headers={"Authorization": "Bearer mcp_wrong", "Accept": "application/json"},
        )
        await client.post("/mcp/srv_nope", json=call, headers={"Authorization": "Bearer x"})
    lines = _access(caplog)[-3:]
    assert lines[0]["rpcMethod"] == "initialize"
    assert lines[0]["status"] == 200
    lines = lines[1:]
    # Refused before its body was read: the reason is known, the method is not.
    assert lines[0]["authReason"] == "wrong_server"
    assert lines[0]["status"] == 401
    assert lines[1]["authReason"] == "unknown_server"
    assert all("secret-argument" not in json.dumps(line) for line in lines)


async def test_list_changed_delay_is_measured_from_the_change(api: Api) -> None:
    runtime = McpRuntime(api.gateway)
    hub = runtime.hub
    metrics = Metrics(api.gateway, hub=hub)
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "seen"})
    server = await api.gateway.store.mcp_servers.get(created.json()["server"]["id"])
    assert server is not None
    binding = Binding(api.org_id, api.workspace_id, server, None, "test")
    told: list[object] = []
    hub.add_listener(binding, told.append)
    seen = await api.gateway.store.db.config_version()
    await api.configure()  # a real change: the server now lists kv-store's tools
    hub.on_change(ChangeEvent(api.org_id, api.workspace_id, "integration", "x", "created"))
    await hub._catch_up(seen)
    assert len(told) == 1
    own = generate_latest(metrics.registry).decode()
    assert "treadle_mcp_list_changed_delay_seconds_count 1.0" in own
    assert "treadle_mcp_list_changed_notifications_total 1.0" in own


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_log_line_of_a_refused_mcp_tool_call_names_its_code(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, era: str
) -> None:
    """A refusal in the pipeline is on its own request's line, also in the handshake era,
    where the handler runs in the session's task (opened by another request)."""
    from bench.rawmcp import RawSession

    monkeypatch.setenv("TREADLE_LOG_FORMAT", "json")  # method and tool names are read then
    await api.configure("kv-store", settings={"persistence": {"scope": "workspace"}})
    async with api.gateway.store.db.write("test") as txn:
        await api.gateway.store.orgs.set_limits(txn, api.org_id, monthly_quota=0)
    caplog.set_level(logging.INFO, logger="treadle.access")
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "q"})
    server, token = created.json()["server"]["id"], created.json()["token"]
    app = build_http_app(api.gateway)
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
        ) as client,
    ):
        session = await RawSession(client, f"/mcp/{server}", era, token).open()
        result = await session.call("kv_store__get", {"key": "k"})
        await session.close()
    assert result["isError"], result
    calls = [line for line in _access(caplog) if line.get("tool") == "kv_store__get"]
    assert [line.get("error") for line in calls] == ["QUOTA_EXCEEDED"], _access(caplog)
