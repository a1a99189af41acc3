"""The MCP face of upstream prompts, resources and completion (`catalog.upstream.content`).

The SDK declares a capability for every handler registered on the one `Server` that serves
every MCP server record, so the handlers are registered whenever federation is on, and
`declare_capabilities` (a middleware on `initialize` and `server/discover`) takes out
`prompts`, `resources` and `completions` for a server whose workspace offers none of them.
A change in an upstream's prompts or resources reaches the clients of every server of its
org as `prompts/list_changed` and `resources/list_changed` (`ContentRelay`). Resource
subscriptions are relayed to the upstream owning the resource (`mcp.resource_relay`), and
`subscribe` is declared only when an upstream offering resources takes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.subscriptions import PromptsListChanged, ResourcesListChanged
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    CompleteRequestParams,
    CompleteResult,
    GetPromptRequestParams,
    GetPromptResult,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    PaginatedRequestParams,
    Prompt,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
)

from treadle.catalog.upstream.content import Caller, Offer, UnknownContent, UpstreamContent
from treadle.errors import ActionRuntimeError, ConnectionCredentialsError, ErrorCode, Refusal
from treadle.mcp.binding import Binding
from treadle.mcp.resource_relay import Listen, ResourceRelay
from treadle.mcp.resync import ResyncHub
from treadle.store.config_cache import ConfigSnapshot

# The JSON-RPC code the MCP specification gives an unknown resource.
RESOURCE_NOT_FOUND = -32002

Resolve = Callable[[ServerRequestContext[Any, Any]], Awaitable[Binding]]
Snapshot = Callable[[ServerRequestContext[Any, Any]], Awaitable[ConfigSnapshot]]


class ContentFace:
    def __init__(self, content: UpstreamContent, resolve: Resolve, snapshot: Snapshot) -> None:
        self._content = content
        self._resolve = resolve
        self._snapshot = snapshot
        self.relay = ResourceRelay(
            content, self._offer, lambda work: _translated(work, RESOURCE_NOT_FOUND)
        )

    def handlers(self) -> dict[str, Any]:
        """The `Server(...)` keyword arguments of these handlers."""
        return {
            "on_list_prompts": self.list_prompts,
            "on_get_prompt": self.get_prompt,
            "on_list_resources": self.list_resources,
            "on_list_resource_templates": self.list_templates,
            "on_read_resource": self.read_resource,
            "on_completion": self.complete,
            "on_subscribe_resource": self.relay.subscribe,
            "on_unsubscribe_resource": self.relay.unsubscribe,
        }

    async def listen(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: SubscriptionsListenRequestParams,
        binding: Binding,
        inner: Listen,
    ) -> SubscriptionsListenResult:
        return await self.relay.listen(ctx, params, binding, inner)

    async def _offer(self, ctx: ServerRequestContext[Any, Any]) -> tuple[Binding, Offer]:
        binding = await self._resolve(ctx)
        snapshot = await self._snapshot(ctx)
        config = await snapshot.workspace(binding.org_id, binding.workspace_id)
        integrations = () if config is None else config.integrations
        return binding, self._content.offer(binding.org_id, integrations)

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListPromptsResult:
        _, offer = await self._offer(ctx)
        _offered(bool(offer.prompts), "prompts")
        return ListPromptsResult(prompts=[Prompt.model_validate(p) for p in offer.prompts])

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        _, offer = await self._offer(ctx)
        _offered(offer.has_resources, "resources")
        return ListResourcesResult(resources=[Resource.model_validate(r) for r in offer.resources])

    async def list_templates(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        _, offer = await self._offer(ctx)
        _offered(offer.has_resources, "resources")
        templates = [ResourceTemplate.model_validate(t) for t in offer.templates]
        return ListResourceTemplatesResult(resource_templates=templates)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: GetPromptRequestParams
    ) -> GetPromptResult:
        binding, offer = await self._offer(ctx)
        _offered(bool(offer.prompts), "prompts")
        result: GetPromptResult = await _translated(
            self._content.get_prompt(_caller(binding), offer, params.name, params.arguments),
            INVALID_PARAMS,
        )
        return result

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        binding, offer = await self._offer(ctx)
        _offered(offer.has_resources, "resources")
        result: ReadResourceResult = await _translated(
            self._content.read_resource(_caller(binding), offer, params.uri), RESOURCE_NOT_FOUND
        )
        # treadle's own cache hints, not the upstream's: what a read answers depends on the
        # caller's connection, which the upstream cannot know.
        return ReadResourceResult(contents=result.contents, _meta=result.meta)

    async def complete(
        self, ctx: ServerRequestContext[Any, Any], params: CompleteRequestParams
    ) -> CompleteResult:
        binding, offer = await self._offer(ctx)
        _offered(bool(offer.completions), "completions")
        argument = {"name": params.argument.name, "value": params.argument.value}
        context = params.context.arguments if params.context is not None else None
        result: CompleteResult = await _translated(
            self._content.complete(_caller(binding), offer, params.ref, argument, context),
            INVALID_PARAMS,
        )
        return result

    async def declare_capabilities(
        self, ctx: ServerRequestContext[Any, Any], call_next: Callable[..., Awaitable[Any]]
    ) -> Any:
        result = await call_next(ctx)
        if ctx.method not in ("initialize", "server/discover") or not isinstance(result, dict):
            return result
        capabilities = result.get("capabilities")
        if not isinstance(capabilities, dict):
            return result
        try:
            _, offer = await self._offer(ctx)
        except Exception:
            offer = Offer()  # no binding: nothing to declare
        capabilities = dict(capabilities)
        if offer.prompts:
            capabilities["prompts"] = {"listChanged": True}
        else:
            capabilities.pop("prompts", None)
        if offer.has_resources:
            capabilities["resources"] = {"listChanged": True, "subscribe": offer.subscribe}
        else:
            capabilities.pop("resources", None)
        if not offer.completions:
            capabilities.pop("completions", None)
        return {**result, "capabilities": capabilities}


class ContentRelay:
    """Tells connected clients that an org's upstream prompts and resources changed. Every
    process applies the changed record itself (`Federation.load`), so each tells its own
    clients; a server whose workspace offers none of them ignores the notification."""

    def __init__(self, hub: ResyncHub) -> None:
        self._hub = hub
        self._tasks: set[asyncio.Task[None]] = set()

    def changed(self, org_id: str) -> None:
        entries = [e for e in self._hub.servers.values() if e.binding.org_id == org_id]
        for entry in entries:
            for listener in list(entry.listeners.values()):
                listener(PromptsListChanged())
                listener(ResourcesListChanged())
        sessions = [s for e in entries for s in e.sessions.values()]
        if sessions:
            task = asyncio.get_running_loop().create_task(self._tell(sessions))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _tell(self, sessions: list[Any]) -> None:
        for session in sessions:
            for name in ("send_prompt_list_changed", "send_resource_list_changed"):
                send = getattr(session, name, None)
                if send is not None:
                    with suppress(Exception):  # a connection that just went away
                        await send()


def _caller(binding: Binding) -> Caller:
    return Caller(binding.org_id, binding.workspace_id, binding.actor, binding.end_user_id)


def _offered(offered: bool, what: str) -> None:
    """A server declares a capability only when it has something to serve under it, and
    answers its methods as unknown otherwise (as a client that asks anyway must expect)."""
    if not offered:
        raise MCPError(METHOD_NOT_FOUND, f"This MCP server offers no {what}")


async def _translated(work: Awaitable[Any], unknown_code: int) -> Any:
    """The engine's refusals as JSON-RPC errors whose `data.code` is treadle's error code."""
    try:
        return await work
    except UnknownContent as error:
        raise MCPError(unknown_code, str(error)) from None
    except Refusal as refusal:
        data = {"code": str(refusal.code), **refusal.extra}
        raise MCPError(INVALID_REQUEST, refusal.message, data) from None
    except ConnectionCredentialsError as error:
        data = {"code": str(ErrorCode.CONNECTION_ERROR)}
        raise MCPError(INVALID_REQUEST, error.message, data) from None
    except ActionRuntimeError as error:
        raise MCPError(
            INTERNAL_ERROR, error.message, {"code": str(ErrorCode.ACTION_FAILED)}
        ) from None
