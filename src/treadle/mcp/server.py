"""The low-level MCP `Server` whose tools come from the database.

One `Server` serves every MCP server record over HTTP (the binding is resolved per request
from the endpoint path and the bearer token); stdio and in-memory use a server bound to one
record. Both protocol eras are served by the SDK; handlers see only `Binding`s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import warnings
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import anyio
from mcp.server import CacheHint, NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError, NoBackChannelError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolRequestParams,
    CallToolResult,
    ClientCapabilities,
    ElicitationCapability,
    EmptyResult,
    InputRequiredResult,
    ListToolsResult,
    MissingRequiredClientCapabilityErrorData,
    PaginatedRequestParams,
    SamplingCapability,
    SamplingMessage,
    SetLevelRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    TextContent,
)
from mcp.types import methods as spec_methods
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request

from treadle import __version__
from treadle.catalog.model import (
    ClientCapabilityMissing,
    ClientInteractionUnavailable,
    Elicited,
    JSONObject,
    LogLevel,
)
from treadle.catalog.upstream.content import UpstreamContent
from treadle.engine import ApprovalPending, ExecuteRequest, Executor, Outcome, Refused, Source
from treadle.engine.approvals import ApprovalDesk, canonical
from treadle.errors import StaleConfiguration
from treadle.mcp import discovery
from treadle.mcp.approval_pause import ApprovalPause
from treadle.mcp.binding import Binding
from treadle.mcp.discovery import SearchIndexes
from treadle.mcp.discovery_tools import META_NAMES
from treadle.mcp.resource_relay import StreamTap
from treadle.mcp.results import to_result
from treadle.mcp.resync import ResyncHub, listening
from treadle.mcp.toolset import Current, ToolSet, ToolsetCache, ToolTarget
from treadle.mcp.upstream_content import ContentFace
from treadle.observability.logs import note_on
from treadle.store.config_cache import ConfigSnapshot

log = logging.getLogger(__name__)

# tools/list pages. Clients (the SDK Client, Claude Desktop, the Inspector, agent frameworks)
# fetch every page before they use any tool. Each page is a whole request through HTTP and
# the SDK, ~2 ms before any tool is serialised (pages are kept serialised, see
# `McpFace._serve_shaped_page`), while the tools' bytes cost the same however they are cut,
# so fewer, larger pages are cheaper: 10,000 tools as 100 pages of 100 took ~330 ms
# server-side in the handshake era, as 12 pages of 512 KiB ~110 ms (bench/ "large"). The
# limit is the SDK client's: it refuses an SSE event over 1 MiB (`DEFAULT_MAX_SSE_EVENT_SIZE`,
# and the whole list of a large workspace is several MiB). So a page holds at most
# PAGE_BYTES of tool JSON, half that limit, leaving room for the envelope and for clients
# with smaller buffers, and at most PAGE_SIZE tools (most workspaces fit one page). Cuts
# depend only on the list and these caps (see `toolset.cut_pages`).
PAGE_SIZE = 1000
PAGE_BYTES = 512 * 1024
LIST_TTL_MS = 30_000
PROGRESS_INTERVAL_SECONDS = 1.0

BindingResolver = Callable[[ServerRequestContext[Any, Any]], Awaitable[Binding]]
# The configuration snapshot of a request: the one version read it is served at (HTTP takes
# it when it authenticates the request; elsewhere each request reads one).
SnapshotSource = Callable[[ServerRequestContext[Any, Any]], Awaitable[ConfigSnapshot]]
SchemaLookup = Callable[[str], dict[str, Any] | None]
# Serves the rest of a request at a newer configuration version than its assumed snapshot's
# (the snapshot and binding as they are there); False when its credentials no longer hold.
SnapshotMover = Callable[[ServerRequestContext[Any, Any], int], Awaitable[bool]]

INSTRUCTIONS = (
    "Tools are the actions of this workspace's integrations, named {alias}__{action}. "
    "Some inputs are fixed by the workspace and are not part of a tool's schema. "
    "A tool result with isError starts with an error code and says what to do next. "
    "When the tools are search_tools, describe_tools and call_tool (discovery mode, for "
    "workspaces with many tools): search_tools with the task in plain words finds the "
    "tools that can do it, describe_tools gives their input schemas, and call_tool runs "
    "one with its name and arguments, exactly as calling it directly would."
)


class _Server(Server[Any]):
    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        # Handshake-era clients learn tools.listChanged only through these options.
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


# The tool set and page a tools/list request is being served from, pinned by the page cache
# for the handler it falls through to (so the page it keeps is the one it looked up).
_pinned_page: ContextVar[tuple[ToolSet, int, int] | None] = ContextVar(
    "treadle_pinned_page", default=None
)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["o"]
    except (ValueError, KeyError, TypeError):
        raise MCPError(INVALID_PARAMS, "Invalid cursor") from None
    # bool is an int subclass: `{"o": true}` is forged, not an offset we issued.
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise MCPError(INVALID_PARAMS, "Invalid cursor")
    return offset


def approval_key(binding: Binding, tool: str, arguments: dict[str, Any]) -> str:
    material = canonical([binding.cache_key, binding.end_user_id, tool, arguments])
    return "mcp_" + hashlib.sha256(material.encode()).hexdigest()[:40]


def _fresh_snapshot(toolsets: ToolsetCache) -> SnapshotSource:
    async def snapshot(_ctx: ServerRequestContext[Any, Any]) -> ConfigSnapshot:
        return await toolsets.snapshot()

    return snapshot


def _asked_for_progress(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether the client may want progress reports for this call (the SDK sends them only
    then). On the wire the token is `params._meta.progressToken`; an in-process 2026-07-28
    client hands the SDK a callback instead, which a handler cannot see, so a call that did
    not come over HTTP and carries no token still gets reports in that era."""
    meta = ctx.meta
    if meta is not None and meta.get("progress_token") is not None:
        return True
    if progress_token_from_params(ctx.params) is not None:
        return True
    return ctx.request is None and ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS


def _connection_key(ctx: ServerRequestContext[Any, Any]) -> tuple[int, Any]:
    # SDK 2.3 gives handlers no public handle on the per-client Connection (Context.connection
    # exists but the runner does not build Contexts). The session proxy holds it; its identity
    # keys the registration and its exit stack tells us when the client is gone.
    connection = ctx.session._connection
    return id(connection), connection


_LOG_LEVELS: tuple[LogLevel, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)

_CAPABILITIES = {
    "sampling": ClientCapabilities(sampling=SamplingCapability()),
    "elicitation": ClientCapabilities(elicitation=ElicitationCapability()),
}


class ClientChannel:
    """`ClientInteraction` for one tool call: talks back to the MCP client that made it.

    Handshake-era clients get server-to-client requests on the call's stream; 2026-07-28 has
    none (`ClientInteractionUnavailable`). A capability the client did not declare is recorded
    so the call answers MissingRequiredClientCapability (-32021), whatever the action did.
    """

    def __init__(self, ctx: ServerRequestContext[Any, Any], floor: LogLevel = "debug") -> None:
        self._ctx = ctx
        self._floor = _LOG_LEVELS.index(floor)
        self.missing: str | None = None

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        await self._ctx.session.report_progress(progress, total, message)

    async def log(self, level: LogLevel, data: Any, logger: str | None = None) -> None:
        # The SDK drops what the client did not opt into (per request on 2026-07-28);
        # handshake-era clients set a floor with logging/setLevel.
        if _LOG_LEVELS.index(level) < self._floor:
            return
        send = self._ctx.session.send_log_message
        await send(level, data, logger, related_request_id=self._ctx.request_id)

    def _require(self, capability: str) -> None:
        if not self._ctx.session.check_client_capability(_CAPABILITIES[capability]):
            self.missing = capability
            raise ClientCapabilityMissing(capability)
        if self._ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise ClientInteractionUnavailable(
                f"{capability} from inside a tool call needs a handshake-era MCP client"
            )

    async def elicit(self, message: str, schema: JSONObject) -> Elicited:
        self._require("elicitation")
        try:
            answer = await self._ctx.session.elicit_form(
                message, schema, related_request_id=self._ctx.request_id
            )
        except NoBackChannelError as error:
            raise ClientInteractionUnavailable(str(error)) from error
        return Elicited(answer.action, dict(answer.content) if answer.content else None)

    async def sample(self, prompt: str, *, max_tokens: int, system: str | None = None) -> str:
        self._require("sampling")
        message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
        try:
            answer = await self._ctx.session.create_message(
                [message],
                max_tokens=max_tokens,
                system_prompt=system,
                related_request_id=self._ctx.request_id,
            )
        except NoBackChannelError as error:
            raise ClientInteractionUnavailable(str(error)) from error
        content = answer.content
        return content.text if isinstance(content, TextContent) else content.model_dump_json()


def _missing_capability(capability: str) -> MCPError:
    data = MissingRequiredClientCapabilityErrorData(required_capabilities=_CAPABILITIES[capability])
    return MCPError(
        MISSING_REQUIRED_CLIENT_CAPABILITY,
        f"This tool needs the client capability {capability!r}",
        data.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


class McpFace:
    """Handlers and the `Server` built from them."""

    def __init__(
        self,
        executor: Executor,
        toolsets: ToolsetCache,
        hub: ResyncHub,
        resolve: BindingResolver,
        *,
        page_size: int = PAGE_SIZE,
        page_bytes: int = PAGE_BYTES,
        progress_seconds: float = PROGRESS_INTERVAL_SECONDS,
        schema_lookup: SchemaLookup | None = None,
        approvals: ApprovalDesk | None = None,
        request_state_key: bytes | None = None,
        snapshot: SnapshotSource | None = None,
        search: SearchIndexes | None = None,
        content: UpstreamContent | None = None,
        move_to: SnapshotMover | None = None,
    ) -> None:
        self._executor = executor
        self._move_to = move_to
        self._search = search or SearchIndexes()
        self._snapshot = snapshot or _fresh_snapshot(toolsets)
        self._pause = ApprovalPause(approvals, progress_seconds) if approvals else None
        self._toolsets = toolsets
        self._hub = hub
        self._resolve = resolve
        self._page_size = page_size
        self._page_bytes = page_bytes
        self._progress_seconds = progress_seconds
        # Tapped: a listen stream's resource subscriptions reach that stream only.
        self._listen = ListenHandler(StreamTap(hub.bus))
        # Upstream MCP servers' prompts and resources (their capabilities per server).
        self._content = (
            ContentFace(content, resolve, self._snapshot) if content is not None else None
        )
        # logging/setLevel floors per handshake-era connection (actions log via ctx.client).
        self._log_floors: dict[int, LogLevel] = {}
        # Logging is deprecated from 2026-07-28 on; handshake-era clients still set levels.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            self.server = self._build(schema_lookup)
        self.server.middleware.append(self._track_handshake_clients)
        if self._content is not None:
            self.server.middleware.append(self._content.declare_capabilities)
        # 2026-07-28 approval rounds carry requestState: seal it with a key every process of
        # this deployment shares, so any replica can continue a round another one started.
        security = (
            RequestStateSecurity(keys=[request_state_key])
            if request_state_key is not None
            else RequestStateSecurity.ephemeral()
        )
        self.server.middleware.append(RequestStateBoundary(security, default_audience="treadle"))
        # Innermost: everything above still runs for every tools/list request.
        self.server.middleware.append(self._serve_shaped_page)

    def _build(self, schema_lookup: SchemaLookup | None) -> _Server:
        return _Server(
            "treadle",
            version=__version__,
            title="treadle",
            instructions=INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_subscriptions_listen=self.listen,
            get_tool_input_schema=schema_lookup,
            # 2026-07-28 clients may reuse a list for a while; a list_changed event evicts it.
            # Private: lists are per server and per principal.
            cache_hints={
                "tools/list": CacheHint(ttl_ms=LIST_TTL_MS, scope="private"),
                "prompts/list": CacheHint(ttl_ms=LIST_TTL_MS, scope="private"),
                "resources/list": CacheHint(ttl_ms=LIST_TTL_MS, scope="private"),
                "resources/templates/list": CacheHint(ttl_ms=LIST_TTL_MS, scope="private"),
                # A resource's contents may change at any moment (subscribers hear of it).
                "resources/read": CacheHint(ttl_ms=0, scope="private"),
            },
            on_set_logging_level=self.set_logging_level,
            **(self._content.handlers() if self._content is not None else {}),
        )

    async def set_logging_level(
        self, ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams
    ) -> EmptyResult:
        key, connection = _connection_key(ctx)
        if key not in self._log_floors:
            connection.exit_stack.callback(self._log_floors.pop, key, None)
        self._log_floors[key] = params.level
        return EmptyResult()

    def _log_floor(self, ctx: ServerRequestContext[Any, Any]) -> LogLevel:
        if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return "debug"
        return self._log_floors.get(_connection_key(ctx)[0], "debug")

    async def _track_handshake_clients(
        self, ctx: ServerRequestContext[Any, Any], call_next: Callable[..., Awaitable[Any]]
    ) -> Any:
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and ctx.method != "initialize":
            binding = await self._resolve(ctx)
            key, connection = _connection_key(ctx)
            if self._hub.add_session(binding, key, ctx.session):
                # Cleanup first: this also runs for `notifications/initialized`, which nobody
                # awaits, so a client that leaves at once may cancel what follows.
                connection.exit_stack.callback(self._hub.remove_session, binding, key)
                await self._hub.remember(binding)
        return await call_next(ctx)

    async def _serve_shaped_page(
        self, ctx: ServerRequestContext[Any, Any], call_next: Callable[..., Awaitable[Any]]
    ) -> Any:
        """Answer tools/list from pages the SDK has already serialised.

        The SDK validates and re-serialises every result against the protocol version's
        schema on each request, whatever the handler returns (a model or a dict), which for
        a large list costs far more than the request itself; and it has no way to take
        pre-serialised JSON. A tool set is immutable, so the first request for a page goes
        through the SDK as usual (the handler below, the cache hints, the schema sieve, the
        serverInfo stamp) and its wire result is kept on the tool set's pages; later
        requests for that page and protocol version get that same result back. Anything
        the SDK itself would answer differently (malformed params, a handshake-era request
        before `initialize`) falls through to it. Every face of a process shapes lists the
        same way (`_build` takes no per-face settings but the page caps, which key the
        pages), so faces sharing a tool set cache share the kept pages.
        """
        if ctx.method != "tools/list" or ctx.request_id is None:
            return await call_next(ctx)
        version = ctx.protocol_version
        try:
            spec_methods.validate_client_request("tools/list", version, ctx.params)
            params = PaginatedRequestParams.model_validate(ctx.params or {}, by_name=False)
        except (ValueError, KeyError):  # pydantic's ValidationError is a ValueError
            return await call_next(ctx)
        if version in HANDSHAKE_PROTOCOL_VERSIONS and ctx.session.client_params is None:
            return await call_next(ctx)
        binding = await self._resolve(ctx)
        toolset = await self._toolsets.get(binding, await self._snapshot(ctx))
        pages = toolset.pages(self._page_size, self._page_bytes)
        start, end = pages.span(decode_cursor(params.cursor))
        shaped = pages.shaped.get((start, version))
        if shaped is None:
            token = _pinned_page.set((toolset, start, end))
            try:
                result = await call_next(ctx)
            finally:
                _pinned_page.reset(token)
            if not isinstance(result, dict):
                return result
            pages.keep(start, version, result)
            shaped = result
        # The runner copies what it is given too; nothing downstream mutates nested values.
        return dict(shaped)

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        pinned = _pinned_page.get()
        if pinned is None:
            binding = await self._resolve(ctx)
            toolset = await self._toolsets.get(binding, await self._snapshot(ctx))
            pages = toolset.pages(self._page_size, self._page_bytes)
            start, end = pages.span(decode_cursor(params.cursor if params else None))
        else:
            toolset, start, end = pinned
        return ListToolsResult(
            tools=list(toolset.tools[start:end]),
            next_cursor=encode_cursor(end) if end < len(toolset.tools) else None,
        )

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        while True:
            try:
                return await self._call_tool(ctx, params)
            except StaleConfiguration as moved:
                # The request's assumed configuration was not current, and nothing was done
                # at it: serve it again at the version found (see ConfigCache).
                if self._move_to is None:
                    raise
                if not await self._move_to(ctx, moved.version):
                    raise MCPError(
                        INVALID_REQUEST, "The credentials of this request are no longer valid"
                    ) from None

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        binding = await self._resolve(ctx)
        snapshot = await self._snapshot(ctx)
        current = await self._toolsets.current(binding, snapshot)
        target = current.toolset.targets.get(params.name)
        if target is None and not snapshot.confirmed:
            # Not the pipeline's answer (a meta-tool's, or an unknown name's): only as the
            # current configuration has it.
            confirmed = await snapshot.confirm()
            if confirmed.version != snapshot.version:
                raise StaleConfiguration(confirmed.version)
        if target is None:
            full = current.toolset.full
            if full is not None and params.name in META_NAMES:
                # DISCOVERY mode: a meta-tool; call_tool comes back to `_call` below.
                async def run(
                    inner: ToolTarget, arguments: dict[str, Any]
                ) -> CallToolResult | InputRequiredResult:
                    return await self._call(ctx, params, binding, current, inner, arguments, None)

                return await discovery.answer(
                    self._search,
                    binding.cache_key,
                    full,
                    params.name,
                    dict(params.arguments or {}),
                    run,
                )
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name[:100]}")
        arguments = dict(params.arguments or {})
        return await self._call(
            ctx, params, binding, current, target, arguments, snapshot.assumed_version
        )

    async def _call(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: CallToolRequestParams,
        binding: Binding,
        current: Current,
        target: ToolTarget,
        arguments: dict[str, Any],
        assumed_version: int | None,
    ) -> CallToolResult | InputRequiredResult:
        """One tool's call, listed directly or reached through `call_tool`; at a snapshot the
        pipeline is to confirm when `assumed_version` is given."""
        # Every refusal past this point is the pipeline's (so it is in the activity log, under
        # the same rule as REST): the face only says what the server's override is.
        request = ExecuteRequest(
            org_id=binding.org_id,
            workspace_id=binding.workspace_id,
            integration_name=target.integration.name,
            action_name=target.action.name,
            source=Source.MCP_TOOLS,
            actor=binding.actor,
            input=arguments,
            workspace_integration_id=target.configured.id,
            end_user_id=binding.end_user_id,
            tool_override=target.override,
            refuse_enforced_keys=True,
            # The same call again (server, end user, tool, arguments) finds its approval; a
            # tool no policy can pause needs none (hashing the arguments costs every call).
            approval_key=approval_key(binding, target.name, arguments)
            if target.may_pause
            else None,
            approval_reuse_window=True,
            mcp_server_id=binding.server.id if binding.server is not None else None,
            client=(channel := ClientChannel(ctx, self._log_floor(ctx))),
            # The configuration this tool was listed from: the pipeline does not read it again.
            config=current.config,
            assumed_version=assumed_version,
        )
        if _asked_for_progress(ctx):
            outcome = await self._with_progress(ctx, request)
        else:
            # No token, no reports: a task group and a sleeping task per call (~60-100 µs)
            # for nothing.
            outcome = await self._executor.execute(request)
        if channel.missing is not None:
            raise _missing_capability(channel.missing)
        if isinstance(outcome, Refused) and isinstance(ctx.request, Request):
            # The request's log line names the refusal, as REST's does.
            note_on(ctx.request.scope, error=outcome.code.value)
        if isinstance(outcome, ApprovalPending) and self._pause is not None:
            # A person decides later: the run after the decision reads the configuration then.
            rerun = replace(request, config=None, assumed_version=None)
            return await self._pause.pause(
                ctx, params, outcome, binding.actor, lambda: self._executor.execute(rerun)
            )
        return to_result(outcome, declares_output=target.action.output_schema is not None)

    async def _with_progress(
        self, ctx: ServerRequestContext[Any, Any], request: ExecuteRequest
    ) -> Outcome:
        """The call, with progress reports beside it while it runs. What the call raises
        comes out as itself, not inside the task group's exception group (`call_tool`
        catches StaleConfiguration)."""
        raised: Exception | None = None
        outcome: Outcome | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._report_progress, ctx)
            try:
                outcome = await self._executor.execute(request)
            except Exception as failure:
                raised = failure
            tg.cancel_scope.cancel()
        if raised is not None:
            raise raised
        assert outcome is not None
        return outcome

    async def _report_progress(self, ctx: ServerRequestContext[Any, Any]) -> None:
        # A no-op unless the client sent a progress token; long calls show they are alive.
        elapsed = 0.0
        while True:
            await anyio.sleep(self._progress_seconds)
            elapsed += self._progress_seconds
            await ctx.session.report_progress(elapsed, None, "still running")

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        binding = await self._resolve(ctx)
        async with self._hub.listening_for(binding):
            token = listening.set(binding)
            try:
                if self._content is not None:
                    return await self._content.listen(ctx, params, binding, self._listen)
                return await self._listen(ctx, params)
            finally:
                listening.reset(token)
