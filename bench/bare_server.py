"""The baseline: a bare MCP SDK low-level `Server` with static tools, over streamable HTTP.

    python bench/bare_server.py --port P [--aliases N]

`--aliases 0` (default) serves one tool, `bench__echo`; `--aliases N` serves N x 25 tools named
like treadle's (`a000__op_00` ...), built from the same bench integrations and answered in one
unpaginated `tools/list`. Each tool does exactly the bench action's work (`echo_output`) and
returns it the way treadle renders a dict output (JSON text + structuredContent).

Extra routes, for the baselines of the other cases:
- `POST /rest/echo`: a plain Starlette JSON route doing the same work (REST baseline);
- `POST /admin/change`: adds a tool and tells every connected client, both eras (resync baseline);
- `GET /_bench/timings`: server-side durations of the MCP and REST POSTs since the last read.

Nothing else: no auth, no database, no logging. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.integrations import bench_many, bench_one, echo_output
from treadle.catalog.model import Action


def _tool(name: str, action: Action) -> Tool:
    marks = action.annotations
    return Tool(
        name=name,
        title=action.display_name,
        description=action.description,
        input_schema=action.input_schema,
        annotations=ToolAnnotations(
            title=action.display_name,
            read_only_hint=marks.read_only,
            destructive_hint=marks.destructive,
            idempotent_hint=marks.idempotent,
            open_world_hint=marks.open_world,
        ),
    )


def build_tools(aliases: int) -> dict[str, Tool]:
    if aliases == 0:
        return {"bench__echo": _tool("bench__echo", bench_one.actions[0])}
    tools: dict[str, Tool] = {}
    for i in range(aliases):
        for action in bench_many.actions:
            name = f"a{i:03d}__{action.name}"
            tools[name] = _tool(name, action)
    return tools


class BareServer:
    def __init__(self, aliases: int) -> None:
        self.tools = build_tools(aliases)
        self.listing = list(self.tools.values())
        self.bus = InMemorySubscriptionBus()
        self.sessions: dict[str, ServerSession] = {}
        self.server = _Server(
            "bare",
            version="1.0",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_subscriptions_listen=ListenHandler(self.bus),
            get_tool_input_schema=self.schema,
        )
        self.server.middleware.append(self.track_legacy)

    async def track_legacy(
        self, ctx: ServerRequestContext[Any, Any], call_next: Callable[..., Awaitable[Any]]
    ) -> Any:
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and ctx.method != "initialize":
            sid = ctx.request.headers.get("mcp-session-id") if ctx.request is not None else None
            if sid and sid not in self.sessions:
                self.sessions[sid] = ctx.session
        return await call_next(ctx)

    async def list_tools(
        self, _ctx: ServerRequestContext[Any, Any], _params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=self.listing)

    async def call_tool(
        self, _ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult:
        if params.name not in self.tools:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name[:100]}")
        output = echo_output(dict(params.arguments or {}))
        return CallToolResult(
            content=[TextContent(type="text", text=json.dumps(output, indent=2))],
            structured_content=output,
        )

    def schema(self, name: str) -> dict[str, Any] | None:
        tool = self.tools.get(name)
        return None if tool is None else tool.input_schema

    async def change(self, _request: Request) -> Response:
        name = f"added_{len(self.tools)}"
        self.tools[name] = _tool(name, bench_one.actions[0])
        self.listing = list(self.tools.values())
        await self.bus.publish(ToolsListChanged())
        for session in list(self.sessions.values()):
            await session.send_tool_list_changed()
        return JSONResponse({"added": name, "legacySessions": len(self.sessions)})


class _Server(Server[Any]):
    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


async def rest_echo(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"success": True, "output": echo_output(body.get("input", {}))})


class Timings:
    """Server-side duration of each MCP and REST POST (the span treadle's access log measures)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.samples: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timed = scope["type"] == "http" and scope["method"] == "POST"
        if not timed or scope["path"] not in ("/mcp", "/rest/echo"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.samples.append((time.perf_counter() - started) * 1000)

    async def read(self, _request: Request) -> Response:
        samples, self.samples = self.samples, []
        return JSONResponse({"ms": samples})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aliases", type=int, default=0)
    args = parser.parse_args()
    bare = BareServer(args.aliases)
    app = bare.server.streamable_http_app(streamable_http_path="/mcp")
    app.router.routes.append(Route("/rest/echo", rest_echo, methods=["POST"]))
    app.router.routes.append(Route("/admin/change", bare.change, methods=["POST"]))
    timed = Timings(app)
    app.router.routes.append(Route("/_bench/timings", timed.read, methods=["GET"]))
    config = uvicorn.Config(
        timed, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on"
    )
    print(f"bare server: {len(bare.tools)} tools on port {args.port}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
