"""Keeps the catalog in step with the upstream records and with the upstreams themselves.

- Records → catalog: every process applies each record's stored catalog as its org's
  integration; a write in this process applies at once, another process's arrives as a
  change event (or, on SQLite without a bus, through a cheap poll of the records' stamps).
- Upstream → records: a catalog session per upstream (opened with the record's catalog
  connection, if any) reads tools, prompts and resources; it is read again when the upstream
  says its lists changed (`list_changed` on a handshake-era session, `subscriptions/listen`
  on 2026-07-28), on demand (`POST /api/v1/upstreams/{id}/refresh`) and on a schedule. A
  changed catalog is stored as a configuration change, so tool lists everywhere follow and
  treadle's own clients get `list_changed`.
- Calls: the call's resolved connection picks the pooled session; a session that died is
  reopened once; failures become the pipeline's errors (unreachable: ACTION_FAILED, refused
  credentials: CONNECTION_ERROR, `isError`: the upstream-failure outcome).
- OAuth upstreams (`auth.type` oauth, signed in through `oauth.upstream_clients`): a call's
  token is refreshed by the pipeline before it expires and after the upstream's 401; the
  catalog connection's is refreshed here the same way, with the same refresh-once machinery.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import anyio
import httpx2
from mcp.shared.exceptions import MCPError
from mcp.types import (
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ToolListChangedNotification,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from treadle.catalog.model import (
    ActionContext,
    ConnectionCredentials,
    Integration,
    JSONObject,
    ToolContent,
)
from treadle.catalog.registry import Catalog
from treadle.catalog.upstream.actions import integration_for, output_of, wire
from treadle.catalog.upstream.sessions import (
    Live,
    SessionPool,
    Target,
    Unreachable,
    calling,
    describe,
    leaf_errors,
)
from treadle.clock import now_iso
from treadle.errors import (
    ActionRuntimeError,
    ConnectionCredentialsError,
    ValidationFailed,
)
from treadle.net.guard import BlockedDestination
from treadle.oauth.refresh import TokenRefresher
from treadle.store import ChangeEvent, Store
from treadle.store.upstreams import Upstream, UpstreamHealth, Upstreams, is_catalog_sign_in

log = logging.getLogger(__name__)

_CHANGED = (
    ToolListChangedNotification,
    PromptListChangedNotification,
    ResourceListChangedNotification,
)
_MAX_PAGES = 50


class Federation:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        refresh_seconds: float = 300.0,
        poll_seconds: float = 0.5,
        refresher: TokenRefresher | None = None,
    ) -> None:
        self.records = Upstreams(store.db)
        # Keeps an OAuth catalog connection's token fresh (calls get theirs from the pipeline).
        self.refresher = refresher
        self._store = store
        self._catalog = catalog
        self._refresh_seconds = refresh_seconds
        self._poll_seconds = poll_seconds
        self.pool = SessionPool()
        self._applied: dict[str, Upstream] = {}
        self._stamps: dict[str, str] = {}
        self._loaded_at: int | None = None  # the configuration version `load` last read at
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._listening: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._wake = asyncio.Event()
        # Told the org id when an applied upstream's prompts or resources changed (the MCP
        # faces relay list_changed to their clients).
        self.content_listeners: list[Callable[[str], None]] = []

    # -- records → catalog -------------------------------------------------------------------

    async def load(self, *, if_version_moved: bool = False) -> None:
        """Apply every stored record (and forget those gone) in this process's catalog.

        With `if_version_moved`, only when the configuration version moved since the last
        load: every write that changes a record's stamp bumps it, and reading the version is
        a microsecond probe on SQLite where the stamps are a query through a worker thread
        (twice a second on every replica, ~7% of a busy server's CPU when it was always)."""
        version = await self._store.db.config_version()
        if if_version_moved and version == self._loaded_at:
            return
        stamps = await self.records.stamps()
        if stamps == self._stamps:
            self._loaded_at = version
            return
        found = {u.id: u for u in await self.records.list()}
        for gone in [i for i in self._applied if i not in found]:
            await self.forget(self._applied[gone])
        for upstream in found.values():
            self.apply(upstream)
        self._stamps = stamps
        self._loaded_at = version  # only once applied: a failed load is tried again

    def apply(self, upstream: Upstream) -> None:
        before = self._applied.get(upstream.id)
        self._applied[upstream.id] = upstream
        if before is not None and _same_offer(before, upstream):
            return
        if before is not None and _content_of(before) != _content_of(upstream):
            for listener in list(self.content_listeners):
                listener(upstream.org_id)
        try:
            self._catalog.put_scoped(upstream.org_id, integration_for(upstream, self.call))
        except ValueError:
            log.error("upstream %s is named like an installed integration", upstream.id)
        if before is not None and (
            before.transport != upstream.transport
            or before.allow_private_network != upstream.allow_private_network
            or before.auth != upstream.auth
        ):
            self._spawn(self.pool.drop_upstream(upstream.id))

    async def forget(self, upstream: Upstream) -> None:
        self._applied.pop(upstream.id, None)
        self._catalog.remove_scoped(upstream.org_id, upstream.name)
        listening = self._listening.pop(upstream.id, None)
        if listening is not None:
            listening.cancel()
        await self.pool.drop_upstream(upstream.id)

    def known(self, upstream_id: str) -> Upstream | None:
        return self._applied.get(upstream_id)

    def named(self, org_id: str, name: str) -> Upstream | None:
        """The org's upstream whose integration is `name` (prompts and resources find their
        upstream through the workspace integration's name)."""
        for upstream in self._applied.values():
            if upstream.org_id == org_id and upstream.name == name:
                return upstream
        return None

    def integration(self, org_id: str, name: str) -> Integration | None:
        return self._catalog.get(name, org_id)

    # -- upstream → records ------------------------------------------------------------------

    async def refresh(self, upstream: Upstream) -> Upstream:
        """Read the upstream's lists now and store them; the record as it is afterwards.
        A failure is recorded in its health (the catalog keeps the last good lists)."""
        try:
            live = await self._open_catalog(upstream)
            catalog = await _read_catalog(live)
        except Exception as error:
            health = UpstreamHealth(
                connected=False,
                last_error=_sign_in_needed(upstream, error) or _public(error),
                protocol_version=upstream.health.protocol_version,
                last_refresh_at=upstream.health.last_refresh_at,
                server_name=upstream.health.server_name,
            )
            await self.records.save_health(upstream.id, health)
        else:
            assert live.client is not None
            info = live.client.server_info
            health = UpstreamHealth(
                connected=True,
                protocol_version=live.client.protocol_version,
                last_refresh_at=now_iso(),
                server_name=None if info is None else info.name,
            )
            digest = hashlib.sha256(
                json.dumps(catalog, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
            await self.records.save_catalog(upstream, catalog, digest, health)
            self._watch_modern(upstream, live)
        fresh = await self.records.get(upstream.id)
        if fresh is None:
            return upstream
        self.apply(fresh)
        return fresh

    def refresh_soon(self, upstream_id: str) -> None:
        """A refresh in the background, one at a time per upstream."""
        running = self._pending.get(upstream_id)
        if running is not None and not running.done():
            # The running read may have listed before this change: read once more after it.
            self._again.add(upstream_id)
            return
        upstream = self._applied.get(upstream_id)
        if upstream is not None:
            self._pending[upstream_id] = self._spawn(self._refresh_quietly(upstream))

    async def _refresh_quietly(self, upstream: Upstream) -> None:
        while True:
            self._again.discard(upstream.id)
            try:
                await self.refresh(upstream)
            except Exception:
                log.exception("refreshing upstream %s failed", upstream.id)
            latest = self._applied.get(upstream.id)
            if upstream.id not in self._again or latest is None:
                return
            upstream = latest

    def _watch_modern(self, upstream: Upstream, live: Live) -> None:
        """On 2026-07-28 change notifications come over one `subscriptions/listen` stream."""
        client = live.client
        if client is None or client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return
        running = self._listening.get(upstream.id)
        if running is not None and not running.done():
            return
        self._listening[upstream.id] = self._spawn(self._listen(upstream.id, live))

    async def _listen(self, upstream_id: str, live: Live) -> None:
        assert live.client is not None
        try:
            async with live.client.listen(
                tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True
            ) as events:
                async for _event in events:
                    self.refresh_soon(upstream_id)
        except Exception as error:
            log.info("upstream %s: change stream ended (%s)", upstream_id, describe(error))

    async def _catalog_credentials(self, upstream: Upstream) -> ConnectionCredentials | None:
        connection_id = upstream.auth.get("connectionId")
        if not isinstance(connection_id, str):
            return None
        found = await self._store.connections.find(
            upstream.org_id, workspace_id="", connection_id=connection_id, with_secret=True
        )
        if not found and upstream.auth.get("type") == "oauth":
            # Signed in through /oauth/start, which makes a workspace's connection.
            signed_in = await self._store.connections.get(upstream.org_id, connection_id)
            if is_catalog_sign_in(signed_in, upstream.name):
                found = [signed_in]
        if not found:
            raise ValidationFailed("The upstream's catalog connection no longer exists")
        credentials = await self._store.connections.credentials(found[0])
        if self.refresher is not None:
            # An OAuth token about to expire is refreshed first, once across replicas.
            credentials = await self.refresher.before_run(found[0], credentials)
        return credentials

    async def _open_catalog(self, upstream: Upstream) -> Live:
        credentials = await self._catalog_credentials(upstream)
        try:
            return await self._open(target_for(upstream, credentials), watch=upstream)
        except Unreachable as failure:
            refresher = self.refresher
            if not failure.auth_refused or refresher is None:
                raise
            if not refresher.can_refresh(credentials):
                raise
            assert credentials is not None
            # The upstream refused an OAuth token it had accepted: refresh it, try once more.
            fresh = await refresher.after_rejection(credentials)
            return await self._open(target_for(upstream, fresh), watch=upstream)

    async def _open(self, target: Target, watch: Upstream | None = None) -> Live:
        async def on_message(message: Any) -> None:
            if watch is not None and isinstance(message, _CHANGED):
                self.refresh_soon(watch.id)

        return await self.pool.session(target, on_message if watch is not None else None)

    # -- calls -------------------------------------------------------------------------------

    async def call(
        self, upstream_id: str, tool: str, context: ActionContext, arguments: JSONObject
    ) -> ToolContent:
        upstream = self._applied.get(upstream_id)
        if upstream is None:
            raise ActionRuntimeError("This upstream MCP server is no longer registered")
        target = target_for(upstream, context.connection)
        client = context.client

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if client is not None:
                await client.progress(progress, total, message)

        for attempt in (1, 2):
            try:
                live = await self.pool.session(target)
            except Unreachable as failure:
                if failure.auth_refused:
                    raise _refused_credentials(upstream) from None
                raise _unreachable(upstream, failure.cause) from None
            assert live.client is not None
            token = calling.set(client)
            marker = id(asyncio.current_task())
            live.in_flight[marker] = client
            try:
                result = await live.client.call_tool(tool, arguments, progress_callback=progress)
            except MCPError as error:
                if live.auth_refused:
                    await self.pool.drop(live)
                    raise _refused_credentials(upstream) from None
                if attempt == 1 and (live.closed or _session_gone(error)):
                    await self.pool.drop(live)
                    continue
                raise ActionRuntimeError(
                    f"The upstream MCP server '{upstream.name}' refused the call: "
                    f"{error.error.message[:300]}",
                    reason="upstream_error",
                    upstreamCode=error.error.code,
                ) from None
            except (anyio.get_cancelled_exc_class(), TimeoutError):
                raise
            except Exception as error:
                await self.pool.drop(live)
                if attempt == 1 and not _credentials_refused(error):
                    continue
                raise _unreachable(upstream, error) from None
            finally:
                live.in_flight.pop(marker, None)
                calling.reset(token)
            if live.closed:
                await self.pool.drop(live)
            return output_of(result)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- background --------------------------------------------------------------------------

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(work)
        return task

    def _on_change(self, event: ChangeEvent) -> None:
        if event.target_type in ("upstream", "configuration"):
            self._wake.set()

    async def run(self) -> None:
        """Until cancelled: follow other processes' record changes, refresh on schedule."""
        unsubscribe = self._store.db.subscribe(self._on_change)
        try:
            await self.load()
            for upstream in list(self._applied.values()):
                self.refresh_soon(upstream.id)
            next_refresh = time.monotonic() + self._refresh_seconds
            while True:
                with anyio.move_on_after(self._poll_seconds):
                    await self._wake.wait()
                woken = self._wake.is_set()
                self._wake.clear()
                try:
                    await self.load(if_version_moved=not woken)
                except Exception:
                    log.exception("could not read the upstream records; will retry")
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + self._refresh_seconds
                    for upstream in list(self._applied.values()):
                        self.refresh_soon(upstream.id)
        finally:
            unsubscribe()

    async def close(self) -> None:
        for task in [*self._pending.values(), *self._listening.values()]:
            task.cancel()
        for task in [*self._pending.values(), *self._listening.values()]:
            with suppress(BaseException):
                await task
        await self.pool.close()


def target_for(upstream: Upstream, credentials: ConnectionCredentials | None) -> Target:
    return Target(
        upstream_id=upstream.id,
        transport=upstream.transport,
        allow_private_network=upstream.allow_private_network,
        headers=tuple(sorted(auth_headers(upstream.auth, credentials).items())),
        connection_id=None if credentials is None else credentials.id,
    )


def auth_headers(
    auth: Mapping[str, Any], credentials: ConnectionCredentials | None
) -> dict[str, str]:
    kind = auth.get("type", "none")
    if kind == "none" or credentials is None:
        return {}
    values = credentials.values
    secret = values.get("token") or values.get("accessToken") or values.get("apiKey") or ""
    if not secret:
        raise ConnectionCredentialsError(
            f"Connection '{credentials.external_id}' holds no token for this upstream"
        )
    if kind == "header":
        return {str(auth.get("headerName") or "X-API-Key"): secret}
    return {"Authorization": f"Bearer {secret}"}


async def _read_catalog(live: Live) -> dict[str, Any]:
    client = live.client
    assert client is not None
    capabilities = client.server_capabilities
    catalog: dict[str, Any] = {"tools": [], "prompts": [], "resources": [], "resourceTemplates": []}
    if capabilities.tools is not None:
        catalog["tools"] = await _pages(client.list_tools, "tools")
    if capabilities.prompts is not None:
        catalog["prompts"] = await _pages(client.list_prompts, "prompts")
    if capabilities.resources is not None:
        catalog["resources"] = await _pages(client.list_resources, "resources")
        catalog["resourceTemplates"] = await _pages(
            client.list_resource_templates, "resource_templates"
        )
    catalog["completions"] = capabilities.completions is not None
    # Whether treadle may relay subscriptions to its resources (mcp/resource_relay.py).
    catalog["subscribe"] = capabilities.resources is not None and (
        capabilities.resources.subscribe is True
    )
    return catalog


async def _pages(method: Any, field: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await method(cursor=cursor)
        items.extend(wire(item) for item in getattr(page, field))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


def _same_offer(before: Upstream, after: Upstream) -> bool:
    return (
        before.catalog_hash == after.catalog_hash
        and before.name == after.name
        and before.display_name == after.display_name
        and before.description == after.description
        and before.auth.get("type") == after.auth.get("type")
    )


def _content_of(upstream: Upstream) -> tuple[Any, ...]:
    catalog = upstream.catalog
    return tuple(catalog.get(k) for k in ("prompts", "resources", "resourceTemplates"))


def _session_gone(error: MCPError) -> bool:
    """An expired or unknown handshake-era session (the upstream restarted)."""
    text = error.error.message.lower()
    return "session" in text or "connection closed" in text


def _credentials_refused(error: BaseException) -> bool:
    return any(
        isinstance(leaf, httpx2.HTTPStatusError) and leaf.response.status_code in (401, 403)
        for leaf in leaf_errors(error)
    )


def _refused_credentials(upstream: Upstream) -> ConnectionCredentialsError:
    return ConnectionCredentialsError(
        f"The upstream MCP server '{upstream.name}' refused the connection's credentials"
    )


def _public(error: BaseException) -> str:
    if isinstance(error, Unreachable):
        if error.auth_refused:
            return "HTTP 401: the upstream refused the credentials"
        error = error.cause
    if isinstance(error, ActionRuntimeError | ConnectionCredentialsError):
        return error.message
    for leaf in leaf_errors(error):
        if isinstance(leaf, BlockedDestination):
            return leaf.message
    return describe(error)


def _sign_in_needed(upstream: Upstream, error: BaseException) -> str | None:
    """What an OAuth upstream nobody signed in to for the catalog needs, said as such."""
    if (
        upstream.auth.get("type") == "oauth"
        and "connectionId" not in upstream.auth
        and isinstance(error, Unreachable)
        and error.auth_refused
    ):
        return (
            "HTTP 401: the upstream needs an OAuth sign-in to list its tools; sign in at "
            "/oauth/start?integrationName=" + upstream.name + "&workspaceId=… and set "
            "auth.connectionId to the connection it makes"
        )
    return None


def _unreachable(upstream: Upstream, error: BaseException) -> Exception:
    for leaf in leaf_errors(error):
        if isinstance(leaf, BlockedDestination):
            return ActionRuntimeError(
                f"The upstream MCP server '{upstream.name}' is on a non-public address; "
                "its record must set allowPrivateNetwork: true",
                reason="destination_not_allowed",
            )
        if isinstance(leaf, ValidationFailed):
            return ActionRuntimeError(leaf.message, reason="stdio_not_allowed")
    if _credentials_refused(error):
        return ConnectionCredentialsError(
            f"The upstream MCP server '{upstream.name}' refused the connection's credentials"
        )
    return ActionRuntimeError(
        f"The upstream MCP server '{upstream.name}' is unreachable ({describe(error)})",
        reason="upstream_unreachable",
    )
