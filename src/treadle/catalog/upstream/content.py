"""An upstream's prompts, resources and resource templates, as a workspace offers them.

Each workspace integration of an upstream contributes what the upstream's stored catalog
lists, namespaced by the integration's alias (unique in a workspace), so two upstreams, or
two aliases of one, never collide:

- prompts: `{alias}__{prompt}`, with the arguments the upstream declares;
- resources and templates: `treadle://{alias}/{upstream URI as is}` (the upstream's URI, or
  URI template, follows the first `/` after the alias unchanged, so a template's variables
  still expand and a read maps back by a prefix split).

What governs them: the integration being configured in the request's workspace (and known
to the org), and the connection the strategy resolves for the calling end user, exactly as
for a tool call (`ConnectionResolver`): a get, read or completion reaches the upstream with
that connection's credentials, over the pooled session of (upstream, connection).
`allowedActions`, partials and approval policies name actions, so they do not apply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mcp import Client
from mcp.types import PromptReference, ResourceTemplateReference

from treadle.catalog.model import Integration
from treadle.catalog.upstream.federation import Federation, target_for
from treadle.catalog.upstream.sessions import Unreachable
from treadle.engine.connections import ConnectionResolver
from treadle.engine.request import ExecuteRequest, Source
from treadle.errors import ActionRuntimeError, ConnectionCredentialsError
from treadle.oauth import OAuth
from treadle.store import Store
from treadle.store.records import WorkspaceIntegration
from treadle.store.upstreams import Upstream

SCHEME = "treadle://"
SEPARATOR = "__"

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
    by_alias: dict[str, Origin] = field(default_factory=dict)
    by_prompt: dict[str, tuple[Origin, str]] = field(default_factory=dict)

    @property
    def has_resources(self) -> bool:
        return bool(self.resources or self.templates)

    def prompt(self, name: str) -> tuple[Origin, str]:
        found = self.by_prompt.get(name)
        if found is None:
            raise UnknownContent(f"Unknown prompt: {name[:100]}")
        return found

    def resource(self, uri: str) -> tuple[Origin, str]:
        parts = split_uri(uri)
        source = None if parts is None else self.by_alias.get(parts[0])
        if parts is None or source is None:
            raise UnknownContent(f"Unknown resource: {uri[:200]}")
        return source, parts[1]


@dataclass(frozen=True, slots=True)
class Caller:
    org_id: str
    workspace_id: str
    actor: str
    end_user_id: str | None


class UpstreamContent:
    def __init__(self, store: Store, federation: Federation, oauth: OAuth | None = None) -> None:
        self._federation = federation
        self._resolver = ConnectionResolver(store.connections, oauth)

    def offer(self, org_id: str, configured: Sequence[WorkspaceIntegration]) -> Offer:
        offer = Offer()
        for wi in configured:
            upstream = self._federation.named(org_id, wi.integration_name)
            integration = self._federation.integration(org_id, wi.integration_name)
            if upstream is None or integration is None:
                continue
            source = Origin(wi, upstream, integration)
            catalog = upstream.catalog
            offer.by_alias[wi.alias] = source
            for prompt in catalog.get("prompts") or ():
                name = prompt.get("name")
                if not isinstance(name, str):
                    continue
                listed = prompt_name(wi.alias, name)
                offer.by_prompt[listed] = (source, name)
                offer.prompts.append({**prompt, "name": listed})
            for resource in catalog.get("resources") or ():
                if isinstance(resource.get("uri"), str):
                    uri = resource_uri(wi.alias, resource["uri"])
                    offer.resources.append({**resource, "uri": uri})
            for template in catalog.get("resourceTemplates") or ():
                if isinstance(template.get("uriTemplate"), str):
                    uri = resource_uri(wi.alias, template["uriTemplate"])
                    offer.templates.append({**template, "uriTemplate": uri})
            if catalog.get("completions") and (
                catalog.get("prompts") or catalog.get("resourceTemplates")
            ):
                object.__setattr__(offer, "completions", True)
        offer.prompts.sort(key=lambda p: str(p["name"]))
        return offer

    async def get_prompt(
        self, caller: Caller, offer: Offer, name: str, arguments: dict[str, str] | None
    ) -> Any:
        source, original = offer.prompt(name)

        async def get(client: Client) -> Any:
            return await client.get_prompt(original, arguments)

        return await self._on_upstream(caller, source, original, get)

    async def read_resource(self, caller: Caller, offer: Offer, uri: str) -> Any:
        source, original = offer.resource(uri)

        async def read(client: Client) -> Any:
            return await client.read_resource(original)

        result = await self._on_upstream(caller, source, original, read)
        # The contents name the URIs they came from: say them as this workspace does.
        for item in result.contents:
            item.uri = resource_uri(source.configured.alias, item.uri)
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

        async def complete(client: Client) -> Any:
            return await client.complete(upstream_ref, argument, context)

        return await self._on_upstream(caller, source, original, complete)

    async def _on_upstream(
        self,
        caller: Caller,
        source: Origin,
        what: str,
        work: Callable[[Client], Awaitable[T]],
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
            assert live.client is not None
            try:
                return await work(live.client)
            except Exception:
                # A session that died under us (upstream restart) is reopened once; an
                # upstream's own MCP error is its answer and goes back as it came.
                if attempt == 1 and live.closed:
                    await pool.drop(live)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover
