"""An OpenAI Agents SDK agent using treadle's tools through `MCPServerStreamableHttp`.

    python examples/openai_agents_sdk.py --url http://127.0.0.1:8400/mcp/srv_… --token mcp_…

No LLM: `ScriptedModel` implements the SDK's `Model` interface. It asks for `notes__put` (a
`kv-store` alias `notes`), then `notes__get`, and answers with what the get returned. Tracing is
disabled so nothing is sent to OpenAI; with a real model, drop `model=` from the `Agent`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from agents import (
    Agent,
    ModelResponse,
    RunConfig,
    Runner,
    Usage,
    set_tracing_disabled,
)
from agents.mcp import MCPServerStreamableHttp
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)


def http_server(url: str, token: str) -> MCPServerStreamableHttp:
    """treadle's `/mcp/{serverId}` over Streamable HTTP with the server's bearer token."""
    return MCPServerStreamableHttp(
        {"url": url, "headers": {"Authorization": f"Bearer {token}"}, "timeout": 30},
        name="treadle",
        cache_tools_list=True,
        client_session_timeout_seconds=30,
    )


class ScriptedModel(Model):
    """A stand-in for an LLM: put, then get, then answer with the get's result."""

    def __init__(self, key: str, value: Any, alias: str = "notes") -> None:
        self.key, self.value, self.alias = key, value, alias

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = [] if isinstance(input, str) else list(input)
        outputs = [
            item
            for item in items
            if isinstance(item, dict) and item.get("type") == "function_call_output"
        ]
        offered = {tool.name for tool in kwargs.get("tools", args[1] if len(args) > 1 else [])}
        if not outputs:
            assert f"{self.alias}__put" in offered, sorted(offered)
            return self._call("put", {"key": self.key, "value": self.value}, len(items))
        if len(outputs) == 1:
            return self._call("get", {"key": self.key}, len(items))
        output = outputs[-1]["output"]  # the MCP result's text blocks, as `input_text` items
        if not isinstance(output, str):
            output = "".join(block["text"] for block in output if block.get("type") == "input_text")
        text = ResponseOutputText(text=output, type="output_text", annotations=[])
        message = ResponseOutputMessage(
            id="msg_final", content=[text], role="assistant", status="completed", type="message"
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def _call(self, action: str, arguments: dict[str, Any], n: int) -> ModelResponse:
        call = ResponseFunctionToolCall(
            arguments=json.dumps(arguments),
            call_id=f"call_{action}_{n}",
            name=f"{self.alias}__{action}",
            type="function_call",
            id=f"fc_{action}_{n}",
            status="completed",
        )
        return ModelResponse(output=[call], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("this example does not stream")


async def put_then_get(server: MCPServerStreamableHttp, key: str, value: Any) -> dict[str, Any]:
    """Run the agent; return the `get` tool's output as the model saw it."""
    set_tracing_disabled(True)
    async with server:
        agent = Agent(
            name="treadle example",
            instructions="Use the notes tools.",
            model=ScriptedModel(key, value),
            mcp_servers=[server],
        )
        result = await Runner.run(
            agent,
            f"Remember {value!r} under {key!r}, then read it back.",
            run_config=RunConfig(tracing_disabled=True),
        )
    answer: dict[str, Any] = json.loads(result.final_output)
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/mcp/srv_…")
    parser.add_argument("--token", required=True, help="the MCP server's mcp_… token")
    parser.add_argument("--key", default="greeting")
    parser.add_argument("--value", default='"hello from the Agents SDK"', help="a JSON value")
    args = parser.parse_args()
    server = http_server(args.url, args.token)
    print(json.dumps(asyncio.run(put_then_get(server, args.key, json.loads(args.value)))))


if __name__ == "__main__":
    main()
