"""A small upstream MCP server (the Python SDK's low-level server) for federation tests.

It also offers prompts (`greet`, `whoami`), resources (a text one, a binary one), a
resource template (`note:///{topic}`) and completion of their arguments.

It injects the failures a gateway must survive: a slow tool (progress, then waits until
cancelled), an `isError` result, a crash (the process exits), a tool list that changes at
runtime (with `list_changed` to both eras) and, over HTTP, a bearer token it requires (401
without one of its tokens). `whoami` answers with the Authorization header it received, so a
test sees which end user's token reached it.

Run: `python upstream_fixture.py stdio` or in-process over HTTP with `http_app(tokens)`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ToolsListChanged,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.types import (
    BlobResourceContents,
    CallToolRequestParams,
    CallToolResult,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    GetPromptRequestParams,
    GetPromptResult,
    ImageContent,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    Prompt,
    PromptArgument,
    PromptMessage,
    PromptReference,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    TextContent,
    TextResourceContents,
    Tool,
    ToolAnnotations,
)
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmM"
    "IQAAAABJRU5ErkJggg=="
)

README_URI = "file:///docs/readme.md"
PIXEL_URI = "file:///pixel.png"
STYLES = ["casual", "cheerful", "formal"]
TOPICS = ["cats", "cars", "dogs"]
PROMPTS = {
    "greet": Prompt(
        name="greet",
        description="A greeting",
        arguments=[
            PromptArgument(name="name", required=True),
            PromptArgument(name="style", description="casual, cheerful or formal"),
        ],
    ),
    "whoami": Prompt(name="whoami", description="The Authorization header seen"),
}


def _base_tools() -> dict[str, Tool]:
    text = {"type": "string"}
    return {
        "echo": Tool(
            name="echo",
            title="Echo",
            description="Says the text back, with the channel it was sent to",
            input_schema={
                "type": "object",
                "properties": {"text": text, "channel": text},
                "required": ["text", "channel"],
            },
            annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False),
        ),
        "whoami": Tool(
            name="whoami",
            description="The Authorization header seen",
            input_schema={"type": "object"},
        ),
        "picture": Tool(
            name="picture", description="A text and an image block", input_schema={"type": "object"}
        ),
        "slow": Tool(
            name="slow",
            description="Reports progress, then waits until cancelled",
            input_schema={"type": "object"},
        ),
        "fail": Tool(
            name="fail", description="Always an isError result", input_schema={"type": "object"}
        ),
        "crash": Tool(
            name="crash", description="Ends the server process", input_schema={"type": "object"}
        ),
        "add_prompt": Tool(
            name="add_prompt",
            description="Adds a prompt and tells clients the prompt list changed",
            input_schema={"type": "object", "properties": {"name": text}, "required": ["name"]},
        ),
        "add_tool": Tool(
            name="add_tool",
            description="Adds a tool and tells clients the list changed",
            input_schema={"type": "object", "properties": {"name": text}, "required": ["name"]},
        ),
    }


class Upstream:
    """One server's state: its tools, its clients (for list_changed) and what it saw."""

    def __init__(self) -> None:
        self.tools = _base_tools()
        self.prompts = dict(PROMPTS)
        self.bus = InMemorySubscriptionBus()
        self.sessions: dict[str, ServerSession] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.seen: list[str | None] = []  # the Authorization header of each whoami call
        self.slow_started = anyio.Event()
        self.slow_cancelled = anyio.Event()
        self.server = _Server(
            "upstream-fixture",
            version="1.0",
            on_list_tools=self._list,
            on_call_tool=self._call,
            on_subscriptions_listen=ListenHandler(self.bus),
            on_list_prompts=self._prompts,
            on_get_prompt=self._prompt,
            on_list_resources=self._resources,
            on_list_resource_templates=self._templates,
            on_read_resource=self._read,
            on_completion=self._complete,
        )
        self.server.middleware.append(self._track)

    async def _prompts(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListPromptsResult:
        return ListPromptsResult(prompts=list(self.prompts.values()))

    async def _prompt(self, ctx: ServerRequestContext, params: GetPromptRequestParams) -> Any:
        args = params.arguments or {}
        if params.name == "greet":
            if "name" not in args:
                raise MCPError(-32602, "Missing argument: name")
            text = f"Say hello to {args['name']}, {args.get('style', 'casual')}ly"
        elif params.name in self.prompts and params.name not in PROMPTS:
            text = f"the {params.name} prompt, added at runtime"
        elif params.name == "whoami":
            seen = ctx.request.headers.get("authorization") if ctx.request is not None else None
            text = str(seen)
        else:
            raise MCPError(-32602, f"Unknown prompt: {params.name}")
        message = PromptMessage(role="user", content=TextContent(type="text", text=text))
        return GetPromptResult(description=f"the {params.name} prompt", messages=[message])

    async def _resources(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        return ListResourcesResult(
            resources=[
                Resource(name="readme", uri=README_URI, mime_type="text/markdown"),
                Resource(name="pixel", uri=PIXEL_URI, mime_type="image/png"),
            ]
        )

    async def _templates(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        template = ResourceTemplate(name="note", uri_template="note:///{topic}")
        return ListResourceTemplatesResult(resource_templates=[template])

    async def _read(
        self, ctx: ServerRequestContext, params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        uri = params.uri
        if uri == README_URI:
            contents: Any = TextResourceContents(uri=uri, mime_type="text/markdown", text="# Hi")
        elif uri == PIXEL_URI:
            contents = BlobResourceContents(uri=uri, mime_type="image/png", blob=PIXEL)
        elif uri.startswith("note:///"):
            contents = TextResourceContents(uri=uri, text=f"a note on {uri[8:]}")
        else:
            raise MCPError(-32002, f"Resource not found: {uri}")
        return ReadResourceResult(contents=[contents])

    async def _complete(
        self, ctx: ServerRequestContext, params: CompleteRequestParams
    ) -> CompleteResult:
        if isinstance(params.ref, PromptReference):
            choices = STYLES if params.ref.name == "greet" else []
        else:
            choices = TOPICS if params.ref.uri == "note:///{topic}" else []
        if params.argument.name not in ("style", "topic"):
            choices = []
        values = [c for c in choices if c.startswith(params.argument.value)]
        return CompleteResult(completion=Completion(values=values, total=len(values)))

    async def _track(
        self, ctx: ServerRequestContext, call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and ctx.method != "initialize":
            key = ctx.request.headers.get("mcp-session-id") if ctx.request is not None else "stdio"
            if key:
                self.sessions[key] = ctx.session
        return await call_next(ctx)

    async def changed(self) -> None:
        await self.bus.publish(ToolsListChanged())
        for session in list(self.sessions.values()):
            await session.send_tool_list_changed()

    async def _list(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=[self.tools[k] for k in sorted(self.tools)])

    async def _call(
        self, ctx: ServerRequestContext, params: CallToolRequestParams
    ) -> CallToolResult:
        args = dict(params.arguments or {})
        self.calls.append((params.name, args))
        name = params.name
        if name == "echo":
            return CallToolResult(
                content=[
                    TextContent(type="text", text=f"{args.get('text')} to {args.get('channel')}")
                ],
            )
        if name == "whoami":
            seen = ctx.request.headers.get("authorization") if ctx.request is not None else None
            self.seen.append(seen)
            return CallToolResult(content=[TextContent(type="text", text=str(seen))])
        if name == "picture":
            return CallToolResult(
                content=[
                    TextContent(type="text", text="a pixel"),
                    ImageContent(type="image", data=PIXEL, mime_type="image/png"),
                ]
            )
        if name == "slow":
            await ctx.session.report_progress(1, 2, "half way")
            self.slow_started.set()
            try:
                await anyio.sleep_forever()
            finally:
                self.slow_cancelled.set()
        if name == "fail":
            return CallToolResult(
                content=[TextContent(type="text", text="the widget broke")], is_error=True
            )
        if name == "crash":
            os._exit(3)
        if name == "add_prompt":
            added = str(args["name"])
            self.prompts[added] = Prompt(name=added, description="added at runtime")
            await self.bus.publish(PromptsListChanged())
            for session in list(self.sessions.values()):
                await session.send_prompt_list_changed()
            return CallToolResult(content=[TextContent(type="text", text=f"added {added}")])
        if name == "add_tool":
            added = str(args["name"])
            self.tools[added] = Tool(
                name=added, description="added at runtime", input_schema={"type": "object"}
            )
            await self.changed()
            return CallToolResult(content=[TextContent(type="text", text=f"added {added}")])
        if name in self.tools:
            return CallToolResult(content=[TextContent(type="text", text=f"ran {name}")])
        raise MCPError(-32602, f"Unknown tool: {name}")


class _Server(Server):  # type: ignore[type-arg]
    # Handshake-era clients learn tools.listChanged only from the initialization options.
    def create_initialization_options(
        self, notification_options: Any = None, *args: Any, **kw: Any
    ) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True, prompts_changed=True),
            *args,
            **kw,
        )


class RequireBearer:
    """401 unless the request carries one of `tokens` (None: no check)."""

    def __init__(self, app: ASGIApp, tokens: set[str] | None) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.tokens is not None:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode()
            if given.removeprefix("Bearer ") not in self.tokens:
                await JSONResponse({"error": "invalid_token"}, status_code=401)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def http_app(upstream: Upstream, tokens: set[str] | None = None) -> ASGIApp:
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"], allowed_origins=[]
    )
    mcp_app = upstream.server.streamable_http_app(
        streamable_http_path="/mcp", transport_security=security
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with upstream.server.session_manager.run():
            yield

    return RequireBearer(Starlette(routes=[Mount("/", app=mcp_app)], lifespan=lifespan), tokens)


async def _stdio() -> None:
    from mcp.server.stdio import stdio_server

    upstream = Upstream()
    async with stdio_server() as (read, write):
        await upstream.server.run(read, write, upstream.server.create_initialization_options())


if __name__ == "__main__":
    if sys.argv[1:] != ["stdio"]:
        sys.exit("usage: upstream_fixture.py stdio")
    anyio.run(_stdio)
