"""`treadle stdio`: stdout carries JSON-RPC only, logs go to stderr, bad targets exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from mcp_harness import McpEnv, subprocess_env

pytestmark = pytest.mark.anyio

WAIT_SECONDS = 10.0


def message(id_: int | None, method: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        body["id"] = id_
    if params is not None:
        body["params"] = params
    return (json.dumps(body) + "\n").encode()


class Lines:
    """Complete lines from a text stream, as they arrive."""

    def __init__(self, stream: TextReceiveStream) -> None:
        self._stream = stream
        self._buffer = ""

    async def next(self) -> str:
        while "\n" not in self._buffer:
            self._buffer += await self._stream.receive()
        line, self._buffer = self._buffer.split("\n", 1)
        return line

    async def remaining(self) -> list[str]:
        """Every line still to come, up to end of stream."""
        async for chunk in self._stream:
            self._buffer += chunk
        return [line for line in self._buffer.split("\n") if line]


async def until_response(lines: Lines, id_: int, seen: list[str]) -> dict[str, Any]:
    """Reads stdout lines (all kept in `seen`) until the response to request `id_`."""
    while True:
        line = await lines.next()
        seen.append(line)
        parsed = json.loads(line)
        if parsed.get("id") == id_ and "method" not in parsed:
            response: dict[str, Any] = parsed
            return response


async def drain(stream: TextReceiveStream, into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk)


def assert_json_rpc(line: str) -> None:
    parsed = json.loads(line)
    assert isinstance(parsed, dict), line
    assert parsed.get("jsonrpc") == "2.0", line
    assert "id" in parsed or "method" in parsed, line


async def test_stdout_carries_only_json_rpc_while_logs_go_to_stderr(mcp_env: McpEnv) -> None:
    """Debug logging (`-v`) covers every level the default could log at, before, during and
    after serving (the SDK diverts stray writes to stdout only while it serves)."""
    await mcp_env.configure("testkit", integrationAlias="kit")
    server_id = await mcp_env.create_server()
    command = [sys.executable, "-m", "treadle", "-v", "stdio", "--server", server_id]
    seen: list[str] = []
    stderr: list[str] = []
    process: Process
    with anyio.fail_after(WAIT_SECONDS):
        async with (
            await anyio.open_process(command, env=subprocess_env(mcp_env.data_dir)) as process,
            anyio.create_task_group() as tg,
        ):
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            tg.start_soon(drain, TextReceiveStream(process.stderr), stderr)
            lines = Lines(TextReceiveStream(process.stdout))
            await process.stdin.send(
                message(
                    1,
                    "initialize",
                    {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "raw", "version": "1"},
                    },
                )
            )
            initialized = await until_response(lines, 1, seen)
            assert initialized["result"]["capabilities"]["tools"]["listChanged"] is True
            await process.stdin.send(message(None, "notifications/initialized"))
            await process.stdin.send(message(2, "tools/list", {}))
            listed = await until_response(lines, 2, seen)
            assert {t["name"] for t in listed["result"]["tools"]} >= {"kit__echo", "kit__crash"}
            # A crashing action is logged with its traceback: that must not reach stdout.
            await process.stdin.send(
                message(3, "tools/call", {"name": "kit__crash", "arguments": {}})
            )
            crashed = await until_response(lines, 3, seen)
            assert crashed["result"]["isError"] is True
            await process.stdin.send(message(4, "tools/call", {"name": "nope__x"}))
            unknown = await until_response(lines, 4, seen)
            assert unknown["error"]["code"] == -32602
            # Garbage in is answered (or dropped) in JSON-RPC, never echoed as text.
            await process.stdin.send(b"this is not json\n")
            await process.stdin.send(message(5, "tools/list", {}))
            await until_response(lines, 5, seen)

            await process.stdin.aclose()
            seen += await lines.remaining()
            assert await process.wait() == 0
    for line in seen:
        assert_json_rpc(line)
    assert "".join(stderr).strip() != ""


@pytest.mark.parametrize(
    "target",
    [["--server", "srv_000000000000000000000000"], ["--workspace", "no-such-workspace"]],
    ids=["unknown-server", "unknown-workspace"],
)
async def test_an_unknown_target_exits_2_with_a_message_on_stderr(
    mcp_env: McpEnv, target: list[str]
) -> None:
    with anyio.fail_after(WAIT_SECONDS):
        finished = await anyio.run_process(
            [sys.executable, "-m", "treadle", "stdio", *target],
            env=subprocess_env(mcp_env.data_dir),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert finished.returncode == 2
    assert finished.stdout == b""
    assert finished.stderr.strip() != b""
