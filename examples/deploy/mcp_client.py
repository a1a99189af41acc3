"""The MCP SDK's client against treadle's demo MCP server, through the balancer.

    python examples/deploy/mcp_client.py --url http://127.0.0.1:8400/mcp/srv_… --token mcp_…

Lists the tools, then puts a value with `scratch__put` and reads it back with `scratch__get`
(each request may land on another replica), printing which replica answered each HTTP request
(nginx's `X-Treadle-Upstream` header, set by examples/deploy/nginx.conf). `--era legacy`
speaks the handshake era (initialize, then a session) instead of the stateless 2026-07-28 era.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def run(url: str, token: str, era: str) -> list[str]:
    """The replicas that answered, in order."""
    answered: list[str] = []

    async def note(response: httpx2.Response) -> None:
        answered.append(response.headers.get("x-treadle-upstream", "?"))

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"response": [note]}) as http,
        Client(streamable_http_client(url, http_client=http), mode=era) as client,
    ):
        names = sorted(tool.name for tool in (await client.list_tools()).tools)
        print(f"tools: {', '.join(names)}")
        key = f"through-the-balancer-{uuid.uuid4().hex[:8]}"
        put = await client.call_tool("scratch__put", {"key": key, "value": {"replicas": 3}})
        print(f"scratch__put -> {json.dumps(put.structured_content)}")
        got = await client.call_tool("scratch__get", {"key": key})
        print(f"scratch__get -> {json.dumps(got.structured_content)}")
    return answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the balancer's /mcp/srv_… URL")
    parser.add_argument("--token", required=True, help="the MCP server's mcp_… token")
    parser.add_argument("--era", choices=("2026-07-28", "legacy"), default="2026-07-28")
    args = parser.parse_args()
    answered = asyncio.run(run(args.url, args.token, args.era))
    print(f"answered by: {', '.join(answered)}")


if __name__ == "__main__":
    main()
