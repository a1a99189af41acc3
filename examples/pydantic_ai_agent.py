"""A pydantic-ai agent using treadle's tools through pydantic-ai's MCP client (`MCPToolset`).

    python examples/pydantic_ai_agent.py --url http://127.0.0.1:8400/mcp/srv_… --token mcp_…

No LLM: a `FunctionModel` plays the model. It asks for `notes__put` (a `kv-store` alias
`notes`), then `notes__get`, and answers with what the get returned. Swap the model for a real
one (`Agent("anthropic:claude-…", toolsets=[toolset])`) and the toolset stays the same.
Pydantic AI 2 replaced `MCPServerStreamableHTTP` / `MCPServerStdio` with `MCPToolset`, which
picks the transport from its argument (a URL here; see `stdio_toolset` for a local process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel


def http_toolset(url: str, token: str) -> MCPToolset[Any]:
    """treadle's `/mcp/{serverId}` over Streamable HTTP with the server's bearer token."""
    return MCPToolset(url, headers={"Authorization": f"Bearer {token}"})


def stdio_toolset(treadle: str, server_id: str, data_dir: str) -> MCPToolset[Any]:
    """`treadle stdio --server …` as a child process (no token: the data dir is the access)."""
    from fastmcp.client.transports import StdioTransport

    transport = StdioTransport(treadle, ["stdio", "--server", server_id, "--data-dir", data_dir])
    return MCPToolset(transport)


def scripted_model(key: str, value: Any, alias: str = "notes") -> FunctionModel:
    """A stand-in for an LLM: put, then get, then answer with the get's result."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [
            part
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        offered = {tool.name for tool in info.function_tools}
        if not returns:
            assert f"{alias}__put" in offered, sorted(offered)
            args = {"key": key, "value": value}
            return ModelResponse(parts=[ToolCallPart(f"{alias}__put", args)])
        if len(returns) == 1:
            return ModelResponse(parts=[ToolCallPart(f"{alias}__get", {"key": key})])
        content = returns[-1].content
        text = content if isinstance(content, str) else json.dumps(content)
        return ModelResponse(parts=[TextPart(text)])

    return FunctionModel(respond)


async def put_then_get(toolset: MCPToolset[Any], key: str, value: Any) -> dict[str, Any]:
    """Run the agent; return the `get` tool's output as the model saw it."""
    agent = Agent(scripted_model(key, value), toolsets=[toolset])
    async with agent:
        result = await agent.run(f"Remember {value!r} under {key!r}, then read it back.")
    answer: dict[str, Any] = json.loads(result.output)
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/mcp/srv_…")
    parser.add_argument("--token", required=True, help="the MCP server's mcp_… token")
    parser.add_argument("--key", default="greeting")
    parser.add_argument("--value", default='"hello from pydantic-ai"', help="a JSON value")
    args = parser.parse_args()
    toolset = http_toolset(args.url, args.token)
    print(json.dumps(asyncio.run(put_then_get(toolset, args.key, json.loads(args.value)))))


if __name__ == "__main__":
    main()
