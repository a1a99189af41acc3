"""Turns a workspace's configuration into MCP tools (the tool provider of the MCP faces).

One tool per allowed action of each workspace integration. Schemas are pruned with the same
partial functions the pipeline merges with. Tool sets are cached per server and rebuilt only
when the workspace's configuration version (or the catalog) moves.
"""

from __future__ import annotations

import hashlib
import json
import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp.types import Tool, ToolAnnotations

from treadle.catalog.model import Action, Integration
from treadle.catalog.registry import Catalog
from treadle.engine.partials import effective_partials, prune_schema
from treadle.engine.policies import may_pause
from treadle.mcp.binding import Binding
from treadle.mcp.discovery_tools import META_TOOLS, listed_mode
from treadle.mcp.naming import assign_names
from treadle.store import Store, WorkspaceConfig
from treadle.store.config_cache import ConfigSnapshot
from treadle.store.gates import ApprovalPolicy
from treadle.store.mcp_servers import DEFAULT_AUTO_THRESHOLD, McpServer, ToolOverride
from treadle.store.records import Partial, WorkspaceIntegration
from treadle.store.versioned_memo import KeyedLocks

log = logging.getLogger(__name__)

# Tool sets kept (one per server in use). A 10,000-tool set with its kept pages is tens of MB;
# most sets are a few dozen tools. An evicted one is rebuilt on its next request.
MAX_TOOLSETS = 1024


@dataclass(frozen=True, slots=True)
class ToolTarget:
    """What a tool name calls. Unlisted targets (actions outside `allowedActions`) stay
    callable so the pipeline can refuse them with ACTION_NOT_ALLOWED instead of the client
    seeing a protocol error for a tool it listed a moment ago."""

    name: str
    integration: Integration
    action: Action
    configured: WorkspaceIntegration
    # The server's override of this tool, handed to the pipeline, which refuses a disabled
    # tool and applies (or refuses) the override's partial ids.
    override: ToolOverride | None
    listed: bool
    # Whether an approval policy could make a call wait for a person (judged as the listing
    # is: `may_pause`); only then does a call need its approval key. An unlisted target is
    # refused before any gate.
    may_pause: bool = False


@dataclass(frozen=True, slots=True)
class Pages:
    """A tool set cut into `tools/list` pages.

    `cuts` are the first index of every page, then the number of tools. They depend only on
    the tool set and the caps, so a list always pages the same way. `shaped` holds each page's
    result as the SDK serialised it, per (first index, protocol version): the MCP face fills
    it on the first request for a page and answers later ones from it, for as long as this
    tool set is current (a change builds a new tool set, and new pages with it). Only pages
    that start at a cut are kept: a cursor is the client's to forge, and any offset answers,
    so kept pages are bounded by the list's own pages, not by the cursors clients send.
    """

    cuts: tuple[int, ...]
    shaped: dict[tuple[int, str], dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def span(self, start: int) -> tuple[int, int]:
        """The tools `[start, end)` a page starting at `start` holds.

        A start that is not a cut (a cursor issued for an earlier version of the list, or
        under other caps) gets the tools up to the next cut, so the listing continues from
        that position and the next page is a regular one again. At or past the end: none.
        """
        after = bisect_right(self.cuts, start)
        if after == len(self.cuts):
            return start, start
        return start, self.cuts[after]

    def holds(self, start: int) -> bool:
        """Whether a page of this list starts at `start` (an empty list has one, at 0)."""
        if len(self.cuts) == 1:
            return start == 0
        index = bisect_right(self.cuts, start) - 1
        return index < len(self.cuts) - 1 and self.cuts[index] == start

    def keep(self, start: int, version: str, result: dict[str, Any]) -> None:
        """Remember a page's serialised result; versions whose tools come out the same
        share one list of them (a 10,000-tool list is ~16 MB of dicts per copy). A start
        that is no page of this list (a forged or stale cursor) is answered, not kept."""
        if not self.holds(start):
            return
        tools = result.get("tools")
        for (other_start, _), other in self.shaped.items():
            if other_start == start and other.get("tools") == tools:
                result = {**result, "tools": other["tools"]}
                break
        self.shaped[(start, version)] = result


def cut_pages(sizes: Sequence[int], max_tools: int, max_bytes: int) -> Pages:
    """Greedy cuts: a page takes tools in order while it stays within `max_tools` tools and
    `max_bytes` bytes of tool JSON (each tool's size plus a separator). A page always holds
    at least one tool, so a single tool over the byte cap still gets a page of its own."""
    cuts = [0]
    count = used = 0
    for index, size in enumerate(sizes):
        cost = size + 1
        if count and (count >= max_tools or used + cost > max_bytes):
            cuts.append(index)
            count = used = 0
        count += 1
        used += cost
    if sizes:
        cuts.append(len(sizes))
    return Pages(tuple(cuts))


@dataclass(frozen=True, slots=True)
class ToolSet:
    tools: tuple[Tool, ...]
    targets: dict[str, ToolTarget]
    fingerprint: str
    # Bytes of each tool's compact JSON, ASCII-escaped: what the 2026-07-28 transport sends
    # (json.dumps) and an upper bound of the handshake transport's UTF-8.
    sizes: tuple[int, ...]
    # DISCOVERY mode: this set lists the meta-tools, and `full` is what they search, describe
    # and call (the set TOOLS mode would list). None: this set is itself that list.
    full: ToolSet | None = None
    by_name: dict[str, Tool] = field(init=False, compare=False, repr=False)
    _pages: dict[tuple[int, int], Pages] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Looked up on every call (the SDK validates arguments against it): O(1), not a scan.
        object.__setattr__(self, "by_name", {tool.name: tool for tool in self.tools})
        object.__setattr__(self, "_pages", {})

    def input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self.by_name.get(name)
        return None if tool is None else tool.input_schema

    def pages(self, max_tools: int, max_bytes: int) -> Pages:
        """This list's pages under the given caps, cut once."""
        key = (max_tools, max_bytes)
        found = self._pages.get(key)
        if found is None:
            found = self._pages[key] = cut_pages(self.sizes, max_tools, max_bytes)
        return found


def _shaping_ids(
    ids: tuple[str, ...] | None,
    partials: list[Partial],
    configured: WorkspaceIntegration,
    action: str,
) -> tuple[str, ...] | None:
    """The override's partial ids that shape the advertised schema: those that apply. A call
    is still refused while any of them does not (the pipeline checks every id), so the tool
    stays listed and the caller learns why instead of the tool vanishing."""
    if ids is None:
        return None
    applicable = {
        p.id
        for p in partials
        if p.applies_to(configured.integration_name, configured.alias, action)
    }
    return tuple(i for i in ids if i in applicable)


def build_toolset(
    catalog: Catalog,
    server: McpServer | None,
    configured: list[WorkspaceIntegration],
    partials: list[Partial],
    policies: Sequence[ApprovalPolicy] = (),
) -> ToolSet:
    known = [(wi, catalog.get(wi.integration_name, wi.org_id)) for wi in configured]
    pairs = [(wi.alias, a.name) for wi, i in known if i is not None for a in i.actions]
    given = server.tool_overrides if server is not None else ()
    renamed = {(o.integration_alias, o.action_name): o.name for o in given if o.name is not None}
    names = assign_names(pairs, renamed)
    # Looked up once per action: a dict, not `McpServer.override_for`'s scan of every override
    # (reversed, so the first override of a pair wins as it does there).
    overrides = {(o.integration_alias, o.action_name): o for o in reversed(given)}
    aliases_per_integration = Counter(wi.integration_name for wi in configured)
    tools: list[Tool] = []
    targets: dict[str, ToolTarget] = {}
    for wi, integration in known:
        if integration is None:
            log.warning("workspace integration %s names unknown integration", wi.id)
            continue
        shared = aliases_per_integration[wi.integration_name] > 1
        for action in integration.actions:
            name = names[(wi.alias, action.name)]
            override = overrides.get((wi.alias, action.name))
            enabled = override.enabled if override is not None else True
            listed = enabled and wi.allows(action.name)
            gated = listed and any(
                may_pause(
                    p,
                    workspace_id=wi.workspace_id,
                    integration_name=integration.name,
                    alias=wi.alias,
                    action_name=action.name,
                    connection_strategy=wi.connection_strategy.value,
                    mcp_server_id=server.id if server is not None else None,
                )
                for p in policies
            )
            target = ToolTarget(
                name=name,
                integration=integration,
                action=action,
                configured=wi,
                override=override,
                listed=listed,
                may_pause=gated,
            )
            targets[name] = target
            if target.listed:
                ids = _shaping_ids(
                    override.partial_ids if override is not None else None,
                    partials,
                    wi,
                    action.name,
                )
                chosen = effective_partials(
                    partials,
                    integration_name=integration.name,
                    alias=wi.alias,
                    action_name=action.name,
                    partial_ids=ids,
                )
                description = override.description if override is not None else None
                # A call that may pause for approval answers with a status object, which
                # would not satisfy the action's output schema: declare none then.
                tools.append(_tool(target, chosen, shared, description, gated))
    tools.sort(key=lambda tool: tool.name)
    return _toolset(tools, targets)


def _tool(
    target: ToolTarget,
    partials: list[Partial],
    shared: bool,
    description: str | None,
    gated: bool = False,
) -> Tool:
    action, alias = target.action, target.configured.alias
    text = description or action.description
    title = action.display_name
    if shared:
        # Several accounts of one integration: say which one this tool acts on.
        text = (
            f"{text} (acts on '{alias}', one of several {target.integration.display_name} "
            "accounts in this workspace)"
        )
        title = f"{title} ({alias})"
    marks = action.annotations
    return Tool(
        name=target.name,
        title=title,
        description=text,
        # The action's own rule for extra keys, as the pipeline applies it: never closed here.
        input_schema=prune_schema(action.input_schema, partials),
        output_schema=None if gated else action.output_schema,
        annotations=ToolAnnotations(
            title=title,
            read_only_hint=marks.read_only,
            destructive_hint=marks.destructive,
            idempotent_hint=marks.idempotent,
            open_world_hint=marks.open_world,
        ),
    )


def _toolset(
    tools: list[Tool], targets: dict[str, ToolTarget], full: ToolSet | None = None
) -> ToolSet:
    # One JSON encoding per tool gives both the fingerprint (key order does not count) and
    # its size on the wire (sorting keys does not change the length).
    encoded = [
        json.dumps(
            tool.model_dump(mode="json", by_alias=True, exclude_none=True),
            sort_keys=True,
            separators=(",", ":"),
        )
        for tool in tools
    ]
    fingerprint = hashlib.sha256("\n".join(encoded).encode()).hexdigest()
    sizes = tuple(len(text) for text in encoded)
    return ToolSet(tuple(tools), targets, fingerprint, sizes, full)


_EMPTY = _toolset([], {})


def as_listed(toolset: ToolSet, server: McpServer | None, mode: str | None = None) -> ToolSet:
    """What a server lists of `toolset`: itself, or the meta-tools over it (DISCOVERY, or AUTO
    past its threshold). `mode`: the binding's own (`treadle stdio --mode`), else the record's.
    The meta-tools' list is the same whatever the tools, so its fingerprint changes (and
    clients are told to list again) only when a server switches mode."""
    mode = mode or (server.mode if server is not None else "TOOLS")
    threshold = server.auto_threshold if server is not None else DEFAULT_AUTO_THRESHOLD
    if listed_mode(mode, threshold, len(toolset.tools)) == "TOOLS":
        return toolset
    return _toolset(list(META_TOOLS), {}, toolset)


@dataclass(slots=True)
class _Built:
    """A tool set and exactly what it was built from; `seen`: the last (configuration
    version, catalog version) it was found current at, with what `current` answered then."""

    config: WorkspaceConfig
    server: McpServer | None
    catalog_version: int
    toolset: ToolSet
    seen: tuple[int, int, Current] | None = None


@dataclass(frozen=True, slots=True)
class Current:
    """A server's tool set at one configuration snapshot, and the workspace configuration it
    was built from: a call hands that same configuration to the pipeline, so what the tool
    advertised and what the call enforces come from one read. None: the workspace is gone."""

    toolset: ToolSet
    config: WorkspaceConfig | None


class ToolsetCache:
    """The latest tool set per server, rebuilt only when what it is built from changed: the
    workspace's configuration (by identity: the config cache keeps equal content as the same
    object), the server record (overrides) or the catalog.

    At most `max_entries` servers' sets are kept, the least recently used one leaving first
    (it is rebuilt if asked for again), and a server or workspace found deleted takes its
    set with it."""

    def __init__(self, store: Store, catalog: Catalog, max_entries: int = MAX_TOOLSETS) -> None:
        self._store = store
        self._catalog = catalog
        self._max = max_entries
        self._entries: dict[str, _Built] = {}
        # After a change, concurrent requests for one server wait for one build (10,000
        # tools take a while), not build it side by side.
        self._building: KeyedLocks[str] = KeyedLocks()

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def snapshot(self) -> ConfigSnapshot:
        return await self._store.config.snapshot()

    async def get(self, binding: Binding, snapshot: ConfigSnapshot | None = None) -> ToolSet:
        return (await self.current(binding, snapshot)).toolset

    async def current(self, binding: Binding, snapshot: ConfigSnapshot | None = None) -> Current:
        """The tool set at `snapshot` (the request's; None: read the version now)."""
        # The catalog is read once, before any await: a list is always built from exactly the
        # catalog version it is cached under, even if an integration is added meanwhile.
        catalog = self._catalog.snapshot()
        if snapshot is None:
            snapshot = await self._store.config.snapshot()
        key = binding.cache_key
        cached = self._entries.get(key)
        if cached is not None and cached.seen is not None:
            # The configuration at one version never changes: a set found current at this
            # version (and catalog) still is, without looking the workspace and server up
            # again (a 2026-07-28 call asks twice: for its header check, then to run).
            version, catalog_version, answer = cached.seen
            if version == snapshot.version and catalog_version == catalog.version:
                self._entries[key] = self._entries.pop(key)  # most recently used
                return answer
        config = await snapshot.workspace(binding.org_id, binding.workspace_id)
        if config is None:
            # The workspace is gone (deleted since the client connected): nothing to offer.
            self._entries.pop(key, None)
            return Current(_EMPTY, None)
        server = binding.server
        if server is not None:
            # Overrides may have changed since the binding was made: use the current record.
            server = await snapshot.mcp_server(server.id)
            if server is None:
                # Deleted since the client connected (a stdio client; HTTP ones are refused).
                self._entries.pop(key, None)
                return Current(_EMPTY, config)
        cached = self._entries.pop(key, None)
        if cached is not None:
            self._entries[key] = cached  # most recently used: last to leave
        if cached is None or not _built_from(cached, config, server, catalog.version):
            async with self._building.hold(key):
                cached = self._entries.get(key)
                if cached is None or not _built_from(cached, config, server, catalog.version):
                    toolset = build_toolset(
                        catalog,
                        server,
                        list(config.integrations),
                        list(config.partials),
                        config.policies,
                    )
                    toolset = as_listed(toolset, server, binding.mode)
                    cached = _Built(config, server, catalog.version, toolset)
                    self._keep(key, cached)
        answer = Current(cached.toolset, config)
        cached.seen = (snapshot.version, catalog.version, answer)
        return answer

    def _keep(self, key: str, built: _Built) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = built

    def __len__(self) -> int:
        return len(self._entries)

    def latest(self, cache_key: str) -> ToolSet | None:
        """The most recently built list of a server, whatever version it was built for."""
        cached = self._entries.get(cache_key)
        return None if cached is None else cached.toolset

    def cached_schema(self, cache_key: str, name: str) -> dict[str, Any] | None:
        """The input schema of a tool from the latest cached list (sync: for header checks)."""
        cached = self._entries.get(cache_key)
        return None if cached is None else cached.toolset.input_schema(name)


def _built_from(
    built: _Built, config: WorkspaceConfig, server: McpServer | None, catalog_version: int
) -> bool:
    return (
        built.config is config
        and built.server == server
        and built.catalog_version == catalog_version
    )
