"""LangChain tools from treadle through `langchain-mcp-adapters` (`MultiServerMCPClient`).

    .tools/langchain-venv/bin/python examples/langchain_mcp_tools.py \\
        --url http://127.0.0.1:8400/mcp/srv_… --token mcp_…

Run it from its own virtualenv: `langchain-mcp-adapters` requires `mcp<2` and treadle pins
`mcp==2.3.0`, so the two cannot share one environment. It only talks to treadle over
Streamable HTTP, so nothing from treadle is imported here. (The file is not named
`langchain_mcp_adapters.py`: a script of that name would shadow the package it imports.)

No LLM: the script invokes `notes__put` (a `kv-store` alias `notes`), then `notes__get`, as
LangChain tools and prints what the get returned. Hand the same `tools` to an agent
(`create_agent(model, tools)`) and it calls them the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from langchain_mcp_adapters.client import MultiServerMCPClient


def http_client(url: str, token: str) -> MultiServerMCPClient:
    """treadle's `/mcp/{serverId}` over Streamable HTTP with the server's bearer token."""
    return MultiServerMCPClient(
        {
            "treadle": {
                "transport": "streamable_http",
                "url": url,
                "headers": {"Authorization": f"Bearer {token}"},
            }
        }
    )


def text_of(output: Any) -> str:
    """A tool's output as text: a string, or a list of content blocks (`{"type": "text"}`)."""
    if isinstance(output, str):
        return output
    return "".join(
        block if isinstance(block, str) else block.get("text", "")
        for block in output
        if isinstance(block, str) or block.get("type") == "text"
    )


async def put_then_get(
    client: MultiServerMCPClient, key: str, value: Any, alias: str = "notes"
) -> dict[str, Any]:
    """Load the tools, put, then get; return the get tool's output."""
    tools = {tool.name: tool for tool in await client.get_tools()}
    missing = {f"{alias}__put", f"{alias}__get"} - tools.keys()
    if missing:
        raise SystemExit(f"no {sorted(missing)} among the tools {sorted(tools)}")
    put, get = tools[f"{alias}__put"], tools[f"{alias}__get"]
    await put.ainvoke({"key": key, "value": value})
    answer: dict[str, Any] = json.loads(text_of(await get.ainvoke({"key": key})))
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/mcp/srv_…")
    parser.add_argument("--token", required=True, help="the MCP server's mcp_… token")
    parser.add_argument("--key", default="greeting")
    parser.add_argument("--value", default='"hello from LangChain"', help="a JSON value")
    args = parser.parse_args()
    client = http_client(args.url, args.token)
    print(json.dumps(asyncio.run(put_then_get(client, args.key, json.loads(args.value)))))


if __name__ == "__main__":
    main()
