"""`/api/v1/upstreams`: an org's upstream MCP servers, each one integration of its tools.

Creating, changing or refreshing one reads the upstream's lists before answering, so the
answer shows its tools and health; an upstream that cannot be reached is still registered,
with the error in its health. Writes need an org-wide key: an upstream serves every
workspace of the org.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.bodies import Body, read_body, read_json_object
from treadle.api.context import caller, path_param
from treadle.api.fields import Description, Identifier, Name, Slug
from treadle.api.openapi import operation
from treadle.api.resources import Upstream as UpstreamOut
from treadle.api.resources import UpstreamRemoved, listing, one
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.catalog.upstream.transport import allowed_stdio, check_url
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.store.database import WriteTxn
from treadle.store.upstreams import Upstream, is_catalog_sign_in

Url = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00-\x20]+$")]
Arg = Annotated[str, StringConstraints(max_length=1000)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,100}$")]


class HttpTransport(Body):
    type: Literal["streamable_http"]
    url: Url


class StdioTransport(Body):
    type: Literal["stdio"]
    command: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    args: Annotated[list[Arg], Field(max_length=100)] = []


Transport = Annotated[HttpTransport | StdioTransport, Field(discriminator="type")]


Scope = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"^[^\s,]+$")]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\s]+$")]
ClientSecret = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class Auth(Body):
    type: Literal["none", "bearer", "header", "oauth"] = "none"
    headerName: HeaderName | None = None
    # The connection the catalog is read with (per-user calls use their own): org-wide, or
    # for oauth any of the org's connections to this upstream (signed in at /oauth/start).
    connectionId: Identifier | None = None
    # oauth only: the scopes to ask for (default: what the upstream's metadata names), and a
    # client registered by hand where the authorization server has no dynamic registration.
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=50)] | None = None
    clientId: ClientId | None = None
    clientSecret: ClientSecret | None = None


class CreateUpstream(Body):
    name: Slug
    displayName: Name | None = None
    description: Description | None = None
    transport: Transport
    allowPrivateNetwork: bool = False
    auth: Auth = Auth()


class UpdateUpstream(Body):
    displayName: Name | None = None
    description: Description | None = None
    transport: Transport | None = None
    allowPrivateNetwork: bool | None = None
    auth: Auth | None = None


async def _checked_transport(
    transport: HttpTransport | StdioTransport, private: bool
) -> dict[str, Any]:
    if isinstance(transport, HttpTransport):
        await check_url(transport.url, private)
        return {"type": "streamable_http", "url": transport.url}
    allowed_stdio(transport.command, transport.args)
    return {"type": "stdio", "command": transport.command, "args": list(transport.args)}


async def _checked_auth(
    gw: Gateway, org_id: str, name: str, auth: Auth, transport: dict[str, Any]
) -> dict[str, Any]:
    if auth.type != "header" and auth.headerName is not None:
        raise ValidationFailed("headerName is only for auth type header", field="auth.headerName")
    if auth.type == "none" and auth.connectionId is not None:
        raise ValidationFailed("auth type none takes no connection", field="auth.connectionId")
    for key in ("scopes", "clientId", "clientSecret"):
        if auth.type != "oauth" and getattr(auth, key) is not None:
            raise ValidationFailed(f"{key} is only for auth type oauth", field=f"auth.{key}")
    if auth.type == "oauth" and transport.get("type") == "stdio":
        raise ValidationFailed(
            "auth type oauth needs a streamable_http transport", field="auth.type"
        )
    if auth.clientSecret is not None and auth.clientId is None:
        raise ValidationFailed("clientSecret needs its clientId", field="auth.clientSecret")
    if auth.connectionId is not None:
        found = await gw.store.connections.find(
            org_id, workspace_id="", connection_id=auth.connectionId
        )
        if not found and auth.type == "oauth":
            # Or one signed in to this upstream at /oauth/start (a workspace's, never an
            # end user's own).
            signed_in = await gw.store.connections.get(org_id, auth.connectionId)
            if is_catalog_sign_in(signed_in, name):
                found = [signed_in]
        if not found:
            raise ValidationFailed(
                "connectionId must name an org-wide connection of this org (or, for oauth, "
                "a workspace connection signed in to this upstream)",
                field="auth.connectionId",
            )
    stored = auth.model_dump(exclude_none=True, exclude={"clientSecret"})
    if auth.clientSecret is not None:
        # Sealed like every secret; the record's answers only say that one is set.
        stored["clientSecretSealed"] = gw.vault.seal({"clientSecret": auth.clientSecret})
    return stored


def _oauth_client_of(upstream: Upstream) -> tuple[Any, ...]:
    """What the OAuth client treadle signs in with was made for (not the catalog
    connection; a re-sealed client secret is the same client)."""
    ignored = ("connectionId", "clientSecretSealed")
    auth = {k: v for k, v in upstream.auth.items() if k not in ignored}
    return (auth, upstream.transport, upstream.allow_private_network)


async def _forget_oauth_client(gw: Gateway, txn: WriteTxn, upstream: Upstream) -> None:
    """The OAuth app registered for an upstream goes with what it was registered for; the
    next sign-in discovers and registers again (its connections have to sign in again)."""
    app = await gw.oauth.apps.get(upstream.org_id, upstream.name)
    if app is not None and app.resource is not None:
        await gw.oauth.apps.delete(txn, app)


async def _follow_oauth_client(
    gw: Gateway, txn: WriteTxn, before: Upstream, after: Upstream
) -> None:
    if _oauth_client_of(before) != _oauth_client_of(after):
        await _forget_oauth_client(gw, txn, before)
        return
    sealed = after.auth.get("clientSecretSealed")
    if sealed is None or sealed == before.auth.get("clientSecretSealed"):
        return
    # A hand-registered client's new secret: its tokens stay valid, so its app is updated.
    app = await gw.oauth.apps.get(after.org_id, after.name)
    if app is not None and app.resource is not None:
        await gw.oauth.apps.put(
            txn,
            org_id=app.org_id,
            integration_name=app.integration_name,
            client_id=app.client_id,
            client_secret=gw.vault.open_sealed(sealed)["clientSecret"],
            scopes=app.scopes,
            authorize_url=app.authorize_url,
            token_url=app.token_url,
            api_base_url=app.api_base_url,
            allow_private_network=app.allow_private_network,
            resource=app.resource,
        )


@operation(
    "Register an upstream MCP server as an integration (its tools are read at once)",
    body=CreateUpstream,
    responses={201: one("upstream", UpstreamOut)},
    errors=[ErrorCode.NOT_FOUND, ErrorCode.DUPLICATE],
)
async def create_upstream(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    body = await read_body(request, CreateUpstream)
    if gw.catalog.get(body.name) is not None:
        raise Refusal(
            ErrorCode.DUPLICATE,
            f"'{body.name}' is the name of an installed integration; choose another",
            field="name",
        )
    transport = await _checked_transport(body.transport, body.allowPrivateNetwork)
    auth = await _checked_auth(gw, principal.org_id, body.name, body.auth, transport)
    async with gw.store.db.write(principal.actor) as txn:
        created = await gw.federation.records.create(
            txn,
            org_id=principal.org_id,
            name=body.name,
            display_name=body.displayName or body.name,
            description=body.description,
            transport=transport,
            allow_private_network=body.allowPrivateNetwork,
            auth=auth,
        )
    gw.federation.apply(created)
    refreshed = await gw.federation.refresh(created)
    return ok({"upstream": refreshed.to_json()}, status=201)


async def _upstream(request: Request) -> tuple[Gateway, str, Upstream]:
    gw, principal = await caller(request)
    upstream_id = path_param(request, "upstream_id", "Upstream")
    found = await gw.federation.records.get(upstream_id, principal.org_id)
    if found is None:
        raise NotFound("Upstream")
    return gw, principal.actor, found


@operation("List upstream MCP servers", responses={200: listing("upstreams", UpstreamOut)})
async def list_upstreams(request: Request) -> Response:
    gw, principal = await caller(request)
    found = await gw.federation.records.list(principal.org_id)
    return ok({"upstreams": [u.to_json() for u in found], "total": len(found)})


@operation("Get an upstream MCP server", responses={200: one("upstream", UpstreamOut)})
async def get_upstream(request: Request) -> Response:
    _gw, _actor, found = await _upstream(request)
    return ok({"upstream": found.to_json()})


@operation(
    "Update an upstream MCP server",
    body=UpdateUpstream,
    responses={200: one("upstream", UpstreamOut)},
    errors=[ErrorCode.NO_UPDATES],
)
async def update_upstream(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    _gw, actor, current = await _upstream(request)
    body = await read_body(request, UpdateUpstream)
    given = body.model_fields_set
    if not given:
        raise Refusal(ErrorCode.NO_UPDATES, "No fields provided to update")
    changes: dict[str, Any] = {}
    if "displayName" in given:
        if body.displayName is None:
            raise ValidationFailed("displayName cannot be null", field="displayName")
        changes["display_name"] = body.displayName
    if "description" in given:
        changes["description"] = body.description
    private = current.allow_private_network
    if "allowPrivateNetwork" in given:
        if body.allowPrivateNetwork is None:
            raise ValidationFailed(
                "allowPrivateNetwork cannot be null", field="allowPrivateNetwork"
            )
        private = changes["allow_private_network"] = body.allowPrivateNetwork
    if "transport" in given or "allowPrivateNetwork" in given:
        if "transport" in given and body.transport is None:
            raise ValidationFailed("transport cannot be null", field="transport")
        if body.transport is not None:
            changes["transport"] = await _checked_transport(body.transport, private)
        elif current.transport.get("type") == "streamable_http":
            await check_url(str(current.transport["url"]), private)
    if "auth" in given:
        if body.auth is None:
            raise ValidationFailed("auth cannot be null", field="auth")
        changes["auth"] = await _checked_auth(
            gw,
            principal.org_id,
            current.name,
            body.auth,
            changes.get("transport", current.transport),
        )
    async with gw.store.db.write(actor) as txn:
        updated = await gw.federation.records.update(txn, current, changes)
        await _follow_oauth_client(gw, txn, current, updated)
    gw.federation.apply(updated)
    if {"transport", "allow_private_network", "auth"} & set(changes):
        updated = await gw.federation.refresh(updated)
    return ok({"upstream": updated.to_json()})


@operation("Remove an upstream MCP server", responses={200: UpstreamRemoved})
async def delete_upstream(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    _gw, actor, current = await _upstream(request)
    async with gw.store.db.write(actor) as txn:
        await gw.federation.records.delete(txn, current)
        await _forget_oauth_client(gw, txn, current)
    await gw.federation.forget(current)
    return ok({"success": True, "id": current.id})


@operation(
    "Read an upstream's tools again",
    body=None,
    responses={200: one("upstream", UpstreamOut)},
    errors=[ErrorCode.VALIDATION_ERROR, ErrorCode.PAYLOAD_TOO_LARGE],
)
async def refresh_upstream(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    await read_json_object(request, optional=True)
    _gw, _actor, current = await _upstream(request)
    refreshed = await gw.federation.refresh(current)
    return ok({"upstream": refreshed.to_json()})


routes = [
    Route("/upstreams", create_upstream, methods=["POST"]),
    Route("/upstreams", list_upstreams, methods=["GET"]),
    Route("/upstreams/{upstream_id}", get_upstream, methods=["GET"]),
    Route("/upstreams/{upstream_id}", update_upstream, methods=["PATCH"]),
    Route("/upstreams/{upstream_id}", delete_upstream, methods=["DELETE"]),
    Route("/upstreams/{upstream_id}/refresh", refresh_upstream, methods=["POST"]),
]
