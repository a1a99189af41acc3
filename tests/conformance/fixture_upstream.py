"""The conformance suite's prompts, resources and completion, as an upstream MCP server.

A small Python SDK (low-level) server the conformance runner starts on loopback and
registers as an upstream integration of the conformance workspace, with
`contentNames: "upstream"` so treadle offers everything under the names the suite asks
for. Names and contents are the ones the suite's scenarios describe:

- prompts `test_simple_prompt`, `test_prompt_with_arguments` (`arg1`, `arg2`),
  `test_prompt_with_embedded_resource` (`resourceUri`), `test_prompt_with_image`;
- resources `test://static-text`, `test://static-binary`, `test://watched-resource`, and
  the template `test://template/{id}/data`;
- completion of `test_prompt_with_arguments`'s arguments and of the template's `id`;
- the suite's hooks `test_trigger_prompt_change` and `test_trigger_tool_change`, which
  add a prompt or a tool and say the list changed (both eras);
- subscriptions in both eras (`resources/subscribe` in the handshake era, the resource URIs
  of a 2026-07-28 `subscriptions/listen` stream); the tool `touch_watched_resource` updates
  the watched resource, so a test sees the update relayed.

Run: `python fixture_upstream.py PORT` (serves `http://127.0.0.1:PORT/mcp`, prints a line
with "Uvicorn running" once it listens).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import uvicorn
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    BlobResourceContents,
    CallToolRequestParams,
    CallToolResult,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmbeddedResource,
    EmptyResult,
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
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    Tool,
    UnsubscribeRequestParams,
)
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

# A 1x1 red PNG (as the tool fixtures' image).
RED_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)  # fmt: skip
STATIC_TEXT = "test://static-text"
STATIC_BINARY = "test://static-binary"
WATCHED = "test://watched-resource"
TEMPLATE = "test://template/{id}/data"
_TEMPLATE_HEAD, _TEMPLATE_TAIL = "test://template/", "/data"
ARGUMENT_CHOICES = {"arg1": ["paris", "park", "party"], "arg2": ["world", "wonder"]}
IDS = ["123", "124", "456"]

PROMPTS = [
    Prompt(name="test_simple_prompt", description="A simple prompt without arguments"),
    Prompt(
        name="test_prompt_with_arguments",
        description="A prompt with two arguments",
        arguments=[
            PromptArgument(name="arg1", description="First test argument", required=True),
            PromptArgument(name="arg2", description="Second test argument", required=True),
        ],
    ),
    Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt embedding a resource",
        arguments=[
            PromptArgument(name="resourceUri", description="The resource to embed", required=True)
        ],
    ),
    Prompt(name="test_prompt_with_image", description="A prompt with an image"),
]
RESOURCES = [
    Resource(
        name="static-text",
        uri=STATIC_TEXT,
        description="A static text resource",
        mime_type="text/plain",
    ),
    Resource(
        name="static-binary",
        uri=STATIC_BINARY,
        description="A static binary resource (a PNG)",
        mime_type="image/png",
    ),
    Resource(
        name="watched-resource",
        uri=WATCHED,
        description="A resource that changes when touch_watched_resource runs",
        mime_type="text/plain",
    ),
]
_NO_INPUT: dict[str, Any] = {"type": "object", "properties": {}}
TOUCH = Tool(
    name="touch_watched_resource",
    description="Changes test://watched-resource and tells its subscribers",
    input_schema=_NO_INPUT,
)
# The suite's hooks for its list_changed checks (server-stateless); exposed under these names
# through the MCP server's toolOverrides.
TRIGGERS = [
    Tool(
        name="test_trigger_prompt_change",
        description="Adds a prompt and tells clients the prompt list changed",
        input_schema=_NO_INPUT,
    ),
    Tool(
        name="test_trigger_tool_change",
        description="Adds a tool and tells clients the tool list changed",
        input_schema=_NO_INPUT,
    ),
]


def _user(content: Any) -> PromptMessage:
    return PromptMessage(role="user", content=content)


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


class _TellingBus(InMemorySubscriptionBus):
    """Says when a listen stream first subscribes (a test then knows an event reaches it)."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribed = anyio.Event()

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.subscribed.set()
        return unsubscribe


class ContentUpstream:
    """The server and what it keeps: the watched resource's version, its subscribers."""

    def __init__(self) -> None:
        self.version = 0
        self.bus = _TellingBus()
        self.listened = self.bus.subscribed  # set once a listen stream subscribes
        # Handshake-era subscribers of the watched resource (one per session).
        self.subscribers: dict[int, ServerSession] = {}
        # Every handshake-era session (told when a list changes), and what was added.
        self.sessions: dict[int, ServerSession] = {}
        self.prompts = list(PROMPTS)
        self.tools = [TOUCH, *TRIGGERS]
        self.server = _Server(
            "treadle-conformance-content",
            version="1.0",
            on_list_tools=self._tools,
            on_call_tool=self._call,
            on_list_prompts=self._prompts,
            on_get_prompt=self._prompt,
            on_list_resources=self._resources,
            on_list_resource_templates=self._templates,
            on_read_resource=self._read,
            on_completion=self._complete,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=ListenHandler(self.bus),
        )
        self.server.middleware.append(self._track)

    async def _track(
        self, ctx: ServerRequestContext, call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and ctx.method != "initialize":
            self.sessions[id(ctx.session._connection)] = ctx.session
        return await call_next(ctx)

    async def _tell_all(self, event: Any, send: str) -> None:
        await self.bus.publish(event)
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):  # a session that went away
                await getattr(session, send)()

    async def _tools(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=self.tools)

    async def _call(
        self, ctx: ServerRequestContext, params: CallToolRequestParams
    ) -> CallToolResult:
        if params.name == "test_trigger_prompt_change":
            added = f"test_added_prompt_{len(self.prompts)}"
            self.prompts.append(Prompt(name=added, description="Added at runtime"))
            await self._tell_all(PromptsListChanged(), "send_prompt_list_changed")
            return CallToolResult(content=[_text(f"added {added}")])
        if params.name == "test_trigger_tool_change":
            added = f"test_added_tool_{len(self.tools)}"
            self.tools.append(
                Tool(name=added, description="Added at runtime", input_schema=_NO_INPUT)
            )
            await self._tell_all(ToolsListChanged(), "send_tool_list_changed")
            return CallToolResult(content=[_text(f"added {added}")])
        if params.name != TOUCH.name:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}")
        self.version += 1
        await self.bus.publish(ResourceUpdated(uri=WATCHED))
        for session in list(self.subscribers.values()):
            with contextlib.suppress(Exception):  # a session that went away
                await session.send_resource_updated(WATCHED)
        return CallToolResult(content=[_text(f"version {self.version}")])

    async def _prompts(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListPromptsResult:
        return ListPromptsResult(prompts=self.prompts)

    async def _prompt(
        self, ctx: ServerRequestContext, params: GetPromptRequestParams
    ) -> GetPromptResult:
        args = params.arguments or {}
        name = params.name
        if name == "test_simple_prompt":
            messages = [_user(_text("This is a simple prompt for testing."))]
        elif name == "test_prompt_with_arguments":
            missing = [a for a in ("arg1", "arg2") if a not in args]
            if missing:
                raise MCPError(INVALID_PARAMS, f"Missing argument: {missing[0]}")
            text = f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"
            messages = [_user(_text(text))]
        elif name == "test_prompt_with_embedded_resource":
            if "resourceUri" not in args:
                raise MCPError(INVALID_PARAMS, "Missing argument: resourceUri")
            embedded = TextResourceContents(
                uri=args["resourceUri"],
                mime_type="text/plain",
                text="Embedded resource content for testing.",
            )
            messages = [
                _user(EmbeddedResource(type="resource", resource=embedded)),
                _user(_text("Please process the embedded resource above.")),
            ]
        elif name == "test_prompt_with_image":
            image = ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png")
            messages = [_user(image), _user(_text("Please analyze the image above."))]
        elif any(p.name == name for p in self.prompts):
            messages = [_user(_text(f"The {name} prompt, added at runtime."))]
        else:
            raise MCPError(INVALID_PARAMS, f"Unknown prompt: {name}")
        return GetPromptResult(messages=messages)

    async def _resources(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        return ListResourcesResult(resources=RESOURCES)

    async def _templates(
        self, ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        template = ResourceTemplate(
            name="template-data",
            uri_template=TEMPLATE,
            description="Data for an id",
            mime_type="application/json",
        )
        return ListResourceTemplatesResult(resource_templates=[template])

    async def _read(
        self, ctx: ServerRequestContext, params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        uri = params.uri
        contents: TextResourceContents | BlobResourceContents
        if uri == STATIC_TEXT:
            text = "This is the content of the static text resource."
            contents = TextResourceContents(uri=uri, mime_type="text/plain", text=text)
        elif uri == STATIC_BINARY:
            contents = BlobResourceContents(uri=uri, mime_type="image/png", blob=RED_PIXEL_PNG)
        elif uri == WATCHED:
            text = f"Watched resource, version {self.version}."
            contents = TextResourceContents(uri=uri, mime_type="text/plain", text=text)
        elif uri.startswith(_TEMPLATE_HEAD) and uri.endswith(_TEMPLATE_TAIL):
            item = uri[len(_TEMPLATE_HEAD) : -len(_TEMPLATE_TAIL)]
            if not item or "/" in item:
                raise MCPError(-32002, f"Resource not found: {uri}")
            data = {"id": item, "templateTest": True, "data": f"Data for ID: {item}"}
            contents = TextResourceContents(
                uri=uri, mime_type="application/json", text=json.dumps(data)
            )
        else:
            raise MCPError(-32002, f"Resource not found: {uri}")
        return ReadResourceResult(contents=[contents])

    async def _complete(
        self, ctx: ServerRequestContext, params: CompleteRequestParams
    ) -> CompleteResult:
        choices: list[str] = []
        if isinstance(params.ref, PromptReference):
            if params.ref.name == "test_prompt_with_arguments":
                choices = ARGUMENT_CHOICES.get(params.argument.name, [])
        elif params.ref.uri == TEMPLATE and params.argument.name == "id":
            choices = IDS
        values = [c for c in choices if c.startswith(params.argument.value)]
        return CompleteResult(
            completion=Completion(values=values, total=len(values), has_more=False)
        )

    async def _subscribe(self, ctx: ServerRequestContext, params: SubscribeRequestParams) -> Any:
        if params.uri == WATCHED:
            self.subscribers[id(ctx.session._connection)] = ctx.session
        return EmptyResult()

    async def _unsubscribe(
        self, ctx: ServerRequestContext, params: UnsubscribeRequestParams
    ) -> Any:
        if params.uri == WATCHED:
            self.subscribers.pop(id(ctx.session._connection), None)
        return EmptyResult()


class _Server(Server):  # type: ignore[type-arg]
    # Handshake-era clients learn listChanged only from the initialization options.
    def create_initialization_options(
        self, notification_options: Any = None, *args: Any, **kw: Any
    ) -> Any:
        options = notification_options or NotificationOptions(
            tools_changed=True, prompts_changed=True, resources_changed=True
        )
        return super().create_initialization_options(options, *args, **kw)


class HandshakeOnly:
    """Answers every 2026-07-28 request as a server predating that era would (HTTP 400, no
    JSON-RPC body), so a client negotiating `auto` falls back to the handshake."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            version = dict(scope["headers"]).get(b"mcp-protocol-version", b"").decode()
            if version in MODERN_PROTOCOL_VERSIONS:
                await PlainTextResponse("Unsupported protocol version", 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(upstream: ContentUpstream, *, handshake_only: bool = False) -> ASGIApp:
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

    app = Starlette(routes=[Mount("/", app=mcp_app)], lifespan=lifespan)
    return HandshakeOnly(app) if handshake_only else app


def main(argv: list[str]) -> None:
    if len(argv) != 1 or not argv[0].isdigit():
        sys.exit("usage: fixture_upstream.py PORT")
    app = http_app(ContentUpstream())
    uvicorn.run(app, host="127.0.0.1", port=int(argv[0]), log_level="info")


if __name__ == "__main__":
    main(sys.argv[1:])
