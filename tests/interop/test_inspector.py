"""The official MCP Inspector CLI (npm @modelcontextprotocol/inspector, pinned in .ci/run) against
treadle over stdio and Streamable HTTP, in both protocol eras (`--protocol-era legacy|modern`).

It runs under the Node 22 of `.tools/`; every assertion is on its `--format json` output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from interop_stack import Gateway, gateway_fixture  # noqa: F401  (the fixture `gateway`)
from live import node_bin, node_env, npm_tool, treadle_env, which_node_tool_missing

ERAS = ("legacy", "modern")
KV_TOOLS = {"notes__put", "notes__get", "notes__delete", "notes__list_keys", "notes__add_to_list"}


def _missing() -> str | None:
    if node_bin() is None or not npm_tool("mcp-inspector").exists():
        return "the MCP Inspector is not installed in .tools/ (run .ci/run's npm step)"
    return which_node_tool_missing()


pytestmark = [
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
    pytest.mark.timeout(120),
]


# The Inspector's exit code for a tool result it accepted and printed that has isError: true.
# A result it refuses (a protocol error, structured content that does not match the tool's
# output schema) exits 1 with an error object instead.
TOOL_ERROR_EXIT = 5


def inspector(home: Path, reach: list[str], *args: str, exit_code: int = 0) -> dict[str, Any]:
    """Run `mcp-inspector --cli ARGS --format json -q REACH` and parse its one JSON object.

    REACH (the server's URL, or `--` and a command) comes last: after `--` all is the command.
    """
    env = node_env()
    env["HOME"] = str(home)  # its catalog and client config live under ~/.mcp-inspector
    done = subprocess.run(
        [str(npm_tool("mcp-inspector")), "--cli", *args, "--format", "json", "-q", *reach],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == exit_code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def target(gateway: Gateway, transport: str) -> list[str]:
    """The Inspector's arguments that reach the gateway (the docs/clients.md snippets)."""
    if transport == "http":
        return [
            "--transport",
            "http",
            "--server-url",
            gateway.url,
            "--header",  # variadic: nothing but headers may follow it
            f"Authorization: Bearer {gateway.token}",
        ]
    # stdio: the Inspector starts the server with a minimal environment; pass what the test
    # integrations need with -e, then the command after `--`.
    env = treadle_env(gateway.data_dir)
    command = [sys.executable, "-m", "treadle", "stdio", "--server", gateway.server_id]
    return [
        "-e",
        f"PYTHONPATH={env['PYTHONPATH']}",
        "-e",
        f"TREADLE_EXTRA_INTEGRATIONS={env['TREADLE_EXTRA_INTEGRATIONS']}",
        "--transport",
        "stdio",
        "--",
        *command,
        "--data-dir",
        str(gateway.data_dir),
    ]


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_inspector_lists_and_calls_tools(
    gateway: Gateway, tmp_path: Path, transport: str, era: str
) -> None:
    reach = target(gateway, transport)

    listed = inspector(tmp_path, reach, "--protocol-era", era, "--method", "tools/list")
    listed = listed["result"]
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert set(tools) >= KV_TOOLS
    assert tools["notes__put"]["inputSchema"]["required"] == ["key", "value"]
    assert tools["notes__get"]["annotations"]["readOnlyHint"] is True

    key = f"inspector-{transport}-{era}"
    value = {"transport": transport, "era": era, "n": [1, 2]}
    put = inspector(
        tmp_path,
        reach,
        "--protocol-era",
        era,
        "--method",
        "tools/call",
        "--tool-name",
        "notes__put",
        "--tool-args-json",
        json.dumps({"key": key, "value": value}),
    )["result"]
    assert put["isError"] is False
    assert put["structuredContent"] == {"key": key, "value": value}
    assert json.loads(put["content"][0]["text"]) == {"key": key, "value": value}

    # Only a 2026-07-28 result carries the server's identity in `_meta` (no initialize):
    # proof that the Inspector spoke the era it was asked for.
    server_info = put.get("_meta", {}).get("io.modelcontextprotocol/serverInfo")
    if era == "modern":
        assert server_info is not None
        assert server_info["name"] == "treadle"
    else:
        assert server_info is None


# Tools that declare an output schema, with inputs that fail: refused before the action runs,
# or failed while it ran (the outbound guard refuses a loopback address). Every such tool of
# the workspace is listed here (asserted below), so a new one cannot be left out.
FAILING: dict[str, tuple[dict[str, Any], str]] = {
    "notes__get": ({}, "VALIDATION_ERROR"),
    "notes__list_keys": ({"limit": 0}, "VALIDATION_ERROR"),
    "web__send_request": ({"url": "http://127.0.0.1:9/"}, "ACTION_FAILED"),
    "kit__echo": ({"text": "no channel"}, "VALIDATION_ERROR"),
}


@pytest.fixture(scope="module")
def declaring(gateway: Gateway) -> Gateway:
    """A workspace of its own whose tools with output schemas are those of FAILING."""
    with gateway.stack.rest() as rest:
        made = rest.post("/api/v1/workspaces", json={"name": "inspector-output-schemas"})
        assert made.status_code == 201, made.text
        workspace_id = made.json()["workspace"]["id"]
        shared = {"persistence": {"scope": "workspace"}}
        for integration, alias, fields in (
            ("kv-store", "notes", {"settings": shared}),
            ("http", "web", {}),
            ("testkit", "kit", {"allowedActions": ["echo"]}),
        ):
            body = {
                "integrationName": integration,
                "integrationAlias": alias,
                "connectionStrategy": "fixed",
                **fields,
            }
            path = f"/api/v1/workspaces/{workspace_id}/integrations"
            created = rest.post(path, json=body)
            assert created.status_code == 201, created.text
        server = rest.post(
            "/api/v1/mcp/servers", json={"workspaceId": workspace_id, "name": "output schemas"}
        )
        assert server.status_code == 201, server.text
    return Gateway(gateway.stack, server.json()["server"]["id"], server.json()["token"])


# HTTP only: the result is the same object on every transport (test_mcp_calls.py checks the
# transports with the SDK client), and each Inspector run costs seconds.
@pytest.mark.parametrize("era", ERAS)
def test_the_inspector_accepts_every_error_result_of_a_tool_with_an_output_schema(
    declaring: Gateway, tmp_path: Path, era: str
) -> None:
    reach = target(declaring, "http")
    listed = inspector(tmp_path, reach, "--protocol-era", era, "--method", "tools/list")
    schemas = {t["name"] for t in listed["result"]["tools"] if t.get("outputSchema")}
    assert schemas == set(FAILING)

    for name, (arguments, code) in FAILING.items():
        # The Inspector lists the tools before it calls one and validates the result against
        # the listed output schema: a result it refuses exits 1, not 5.
        called = inspector(
            tmp_path,
            reach,
            "--protocol-era",
            era,
            "--method",
            "tools/call",
            "--tool-name",
            name,
            "--tool-args-json",
            json.dumps(arguments),
            exit_code=TOOL_ERROR_EXIT,
        )["result"]
        assert called["isError"] is True, (name, called)
        assert "structuredContent" not in called, (name, called)
        assert called["content"][0]["text"].startswith(f"{code}: "), (name, called)
