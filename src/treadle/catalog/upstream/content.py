"""An upstream's prompts, resources and resource templates, as a workspace offers them.

Each workspace integration of an upstream contributes what the upstream's stored catalog
lists, namespaced by the integration's alias (unique in a workspace), so two upstreams, or
two aliases of one, never collide:

- prompts: `{alias}__{prompt}`, with the arguments the upstream declares;
- resources and templates: `treadle://{alias}/{upstream URI as is}` (the upstream's URI, or
  URI template, follows the first `/` after the alias unchanged, so a template's variables
  still expand and a read maps back by a prefix split).

A workspace integration whose settings say `"contentNames": "upstream"` offers them under
the upstream's own names instead (a server fronting one upstream, whose clients already know
its prompt names and URIs). Those can never take a namespaced name: a prompt whose own name
holds `__`, a URI that starts with `treadle://`, or a name an earlier-configured integration
of this kind already took, is namespaced as usual. A URI in no namespace that matches nothing
listed goes to the earliest-configured of them (a resource the upstream reads but does not
list, as a subscription may name).

What governs them: the integration being configured in the request's workspace (and known
to the org), and the connection the strategy resolves for the calling end user, exactly as
for a tool call (`ConnectionResolver`): a get, read or completion reaches the upstream with
that connection's credentials, over the pooled session of (upstream, connection).
`allowedActions`, partials and approval policies name actions, so they do not apply.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mcp import Client
from mcp.types import PromptReference, ResourceTemplateReference

from treadle.catalog.model import Integration
from treadle.catalog.upstream.federation import Federation, target_for
from treadle.catalog.upstream.sessions import Live, Unreachable
from treadle.catalog.upstream.watches import Cancel, Deliver, ResourceWatches
from treadle.engine.connections import ConnectionResolver
from treadle.engine.request import ExecuteRequest, Source
from treadle.errors import ActionRuntimeError, ConnectionCredentialsError
from treadle.oauth import OAuth
from treadle.store import Store
from treadle.store.records import WorkspaceIntegration
from treadle.store.upstreams import Upstream

SCHEME = "treadle://"
SEPARATOR = "__"
# Workspace integration settings: `{"contentNames": "upstream"}` keeps the upstream's names.
CONTENT_NAMES = "contentNames"
UPSTREAM_NAMES = "upstream"

T = TypeVar("T")


def prompt_name(alias: str, prompt: str) -> str:
    return f"{alias}{SEPARATOR}{prompt}"


def resource_uri(alias: str, uri: str) -> str:
    return f"{SCHEME}{alias}/{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    """(alias, upstream URI) of a namespaced URI; None if it is not one."""
    if not uri.startswith(SCHEME):
        return None
    alias, slash, original = uri[len(SCHEME) :].partition("/")
    if not alias or not slash or not original:
        return None
    return alias, original


def _client(live: Live) -> Client:
    assert live.client is not None
    return live.client


def _listed_uri(offer: Offer, source: Origin, own_names: bool, uri: str) -> str:
    """The URI (or template) `source` offers `uri` under, claiming it if it keeps its own."""
    if own_names and not uri.startswith(SCHEME) and uri not in offer.by_uri:
        offer.by_uri[uri] = source
        return uri
    return resource_uri(source.configured.alias, uri)


def _template_pattern(template: str) -> re.Pattern[str]:
    """What URIs a URI template (RFC 6570) expands to: a simple `{var}` is one path segment,
    a reserved or fragment expansion (`{+var}`, `{#var}`) anything."""
    parts: list[str] = []
    for literal, expression in re.findall(r"([^{]*)(\{[^}]*\}|$)", template):
        parts.append(re.escape(literal))
        if expression:
            parts.append(".*" if expression[1:2] in ("+", "#") else "[^/]*")
    return re.compile("".join(parts))


class UnknownContent(LookupError):
    """A prompt name or URI this workspace does not offer."""


@dataclass(frozen=True, slots=True)
class Origin:
    configured: WorkspaceIntegration
    upstream: Upstream
    integration: Integration


@dataclass(frozen=True, slots=True)
class Offer:
    """What one workspace offers, in wire shapes, and where each name leads."""

    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    completions: bool = False
    # Some upstream offering resources declares `resources.subscribe`.
    subscribe: bool = False
    by_alias: dict[str, Origin] = field(default_factory=dict)
    by_prompt: dict[str, tuple[Origin, str]] = field(default_factory=dict)
    # Resources and templates offered under the upstream's own URIs, and where the rest of
    # the URIs outside treadle's namespace go (see the module docstring).
    by_uri: dict[str, Origin] = field(default_factory=dict)
    by_template: list[tuple[re.Pattern[str], Origin]] = field(default_factory=list)
    unprefixed: Origin | None = None

    @property
    def has_resources(self) -> bool:
        return bool(self.resources or self.templates)

    def prompt(self, name: str) -> tuple[Origin, str]:
        found = self.by_prompt.get(name)
        if found is None:
            raise UnknownContent(f"Unknown prompt: {name[:100]}")
        return found

    def resource(self, uri: str) -> tuple[Origin, str]:
        """(origin, the upstream's URI) of a URI this workspace offers."""
        parts = split_uri(uri)
        if parts is not None:
            source = self.by_alias.get(parts[0])
            if source is None:
                raise UnknownContent(f"Unknown resource: {uri[:200]}")
            return source, parts[1]
        found = self.by_uri.get(uri)
        if found is None:
            found = next((o for pattern, o in self.by_template if pattern.fullmatch(uri)), None)
        found = found or self.unprefixed
        if found is None or uri.startswith(SCHEME):
            raise UnknownContent(f"Unknown resource: {uri[:200]}")
        return found, uri

    def said(self, source: Origin, uri: str) -> str:
        """How this workspace names the upstream's `uri` of `source`."""
        if self.by_uri.get(uri) is source or (
            source is self.unprefixed and not uri.startswith(SCHEME)
        ):
            return uri
        if any(o is source and p.fullmatch(uri) for p, o in self.by_template):
            return uri
        return resource_uri(source.configured.alias, uri)


@dataclass(frozen=True, slots=True)
class Caller:
    org_id: str
    workspace_id: str
    actor: str
    end_user_id: str | None


class NotSubscribable(LookupError):
    """A resource whose upstream takes no subscriptions."""


class UpstreamContent:
    def __init__(self, store: Store, federation: Federation, oauth: OAuth | None = None) -> None:
        self._federation = federation
        self._resolver = ConnectionResolver(store.connections, oauth)
        self.watches = ResourceWatches()

    def offer(self, org_id: str, configured: Sequence[WorkspaceIntegration]) -> Offer:
        offer = Offer()
        # Earliest-configured first, so a later integration never takes a name from one
        # configured before it (ids break ties between equal timestamps).
        for wi in sorted(configured, key=lambda w: (w.created_at, w.id)):
            upstream = self._federation.named(org_id, wi.integration_name)
            integration = self._federation.integration(org_id, wi.integration_name)
            if upstream is None or integration is None:
                continue
            source = Origin(wi, upstream, integration)
            own_names = wi.settings.get(CONTENT_NAMES) == UPSTREAM_NAMES
            catalog = upstream.catalog
            offer.by_alias[wi.alias] = source
            for prompt in catalog.get("prompts") or ():
                name = prompt.get("name")
                if not isinstance(name, str):
                    continue
                listed = prompt_name(wi.alias, name)
                if own_names and SEPARATOR not in name and name not in offer.by_prompt:
                    listed = name
                offer.by_prompt[listed] = (source, name)
                offer.prompts.append({**prompt, "name": listed})
            for resource in catalog.get("resources") or ():
                if isinstance(resource.get("uri"), str):
                    uri = _listed_uri(offer, source, own_names, resource["uri"])
                    offer.resources.append({**resource, "uri": uri})
            for template in catalog.get("resourceTemplates") or ():
                if isinstance(template.get("uriTemplate"), str):
                    raw = template["uriTemplate"]
                    uri = _listed_uri(offer, source, own_names, raw)
                    if uri == raw:
                        offer.by_template.append((_template_pattern(raw), source))
                    offer.templates.append({**template, "uriTemplate": uri})
            if own_names and offer.unprefixed is None:
                object.__setattr__(offer, "unprefixed", source)
            if catalog.get("completions") and (
                catalog.get("prompts") or catalog.get("resourceTemplates")
            ):
                object.__setattr__(offer, "completions", True)
            if catalog.get("subscribe") and (
                catalog.get("resources") or catalog.get("resourceTemplates")
            ):
                object.__setattr__(offer, "subscribe", True)
        offer.prompts.sort(key=lambda p: str(p["name"]))
        return offer

    async def get_prompt(
        self, caller: Caller, offer: Offer, name: str, arguments: dict[str, str] | None
    ) -> Any:
        source, original = offer.prompt(name)

        async def get(live: Live) -> Any:
            return await _client(live).get_prompt(original, arguments)

        return await self._on_upstream(caller, source, original, get)

    async def read_resource(self, caller: Caller, offer: Offer, uri: str) -> Any:
        source, original = offer.resource(uri)

        async def read(live: Live) -> Any:
            return await _client(live).read_resource(original)

        result = await self._on_upstream(caller, source, original, read)
        # The contents name the URIs they came from: say them as this workspace does.
        for item in result.contents:
            item.uri = offer.said(source, item.uri)
        return result

    async def complete(
        self,
        caller: Caller,
        offer: Offer,
        ref: PromptReference | ResourceTemplateReference,
        argument: dict[str, str],
        context: dict[str, str] | None,
    ) -> Any:
        if isinstance(ref, PromptReference):
            source, original = offer.prompt(ref.name)
            upstream_ref: PromptReference | ResourceTemplateReference = PromptReference(
                type="ref/prompt", name=original
            )
        else:
            source, original = offer.resource(ref.uri)
            upstream_ref = ResourceTemplateReference(type="ref/resource", uri=original)

        async def complete(live: Live) -> Any:
            return await _client(live).complete(upstream_ref, argument, context)

        return await self._on_upstream(caller, source, original, complete)

    async def subscribe(self, caller: Caller, offer: Offer, uri: str, deliver: Deliver) -> Cancel:
        """Have `deliver` called on every update of the offered `uri`, over the session of
        the connection the caller resolves to; await the answer to stop."""
        source, original = offer.resource(uri)
        if not source.upstream.catalog.get("subscribe"):
            raise NotSubscribable(f"The server of {uri[:200]} takes no subscriptions")

        pool = self._federation.pool

        async def watch(live: Live) -> Cancel:
            async def reopen() -> Live:
                return await pool.session(live.target)

            return await self.watches.watch(live, original, deliver, reopen)

        return await self._on_upstream(caller, source, original, watch)

    async def _on_upstream(
        self,
        caller: Caller,
        source: Origin,
        what: str,
        work: Callable[[Live], Awaitable[T]],
    ) -> T:
        request = ExecuteRequest(
            org_id=caller.org_id,
            workspace_id=caller.workspace_id,
            integration_name=source.integration.name,
            action_name=what,
            source=Source.MCP_TOOLS,
            actor=caller.actor,
            workspace_integration_id=source.configured.id,
            end_user_id=caller.end_user_id,
        )
        credentials = await self._resolver.resolve(request, source.integration, source.configured)
        upstream = source.upstream
        target = target_for(upstream, credentials)
        pool = self._federation.pool
        for attempt in (1, 2):
            try:
                live = await pool.session(target)
            except Unreachable as failure:
                if failure.auth_refused:
                    raise ConnectionCredentialsError(
                        f"The upstream MCP server '{upstream.name}' refused the "
                        "connection's credentials"
                    ) from None
                raise ActionRuntimeError(
                    f"The upstream MCP server '{upstream.name}' is unreachable",
                    reason="upstream_unreachable",
                ) from None
            try:
                return await work(live)
            except Exception:
                # A session that died under us (upstream restart) is reopened once; an
                # upstream's own MCP error is its answer and goes back as it came.
                if attempt == 1 and live.closed:
                    await pool.drop(live)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover
