"""`/api/v1/identity-providers`: an org's identity providers.

Org-wide like OAuth apps: one provider serves every workspace of the org. Writes need an
org-wide API key; an `oidc` provider's client secret goes in, is sealed like connection
secrets, and never comes out (`clientSecretSet` says whether one is stored).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import Name
from treadle.api.openapi import Deleted, Out, listing, one, operation
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.auth.identity import discovery
from treadle.auth.identity.records import IdentityProvider, IdpKind
from treadle.auth.identity.repository import IdpFields
from treadle.auth.identity.signin import providers, redirect_uri
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed

Url = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\s]+$")]
ClientSecret = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Scope = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"^[!#-\[\]-~]+$")]
Claim = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Audience = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[^\s]+$")]
ServerId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\s]+$")]
Scopes = Annotated[list[Scope], Field(max_length=50)]
ServerIds = Annotated[list[ServerId], Field(max_length=500)]

# An external authorization server's tokens must carry this scope unless `scopes` says
# otherwise: the one treadle's own authorization server grants for its MCP endpoints.
DEFAULT_EXTERNAL_SCOPES = ("mcp",)


class CreateIdp(Body):
    name: Name
    kind: Literal["oidc", "external_as"]
    issuer: Url
    clientId: ClientId | None = None
    clientSecret: ClientSecret | None = None
    scopes: Scopes | None = None
    claim: Claim = "sub"
    allowCreateEndUsers: bool = False
    audience: Audience | None = None
    # Lets discovery, keys and the token exchange reach a loopback or intranet provider
    # (a self-hosted one, or one in a test). Off by default; plain http needs it.
    allowPrivateNetwork: bool = False
    mcpServerIds: ServerIds | None = None


class UpdateIdp(Body):
    name: Name | None = None
    kind: Literal["oidc", "external_as"] | None = None
    issuer: Url | None = None
    clientId: ClientId | None = None
    clientSecret: ClientSecret | None = None
    scopes: Scopes | None = None
    claim: Claim | None = None
    allowCreateEndUsers: bool | None = None
    audience: Audience | None = None
    allowPrivateNetwork: bool | None = None
    mcpServerIds: ServerIds | None = None


class IdentityProviderOut(Out):
    """An identity provider; `clientId`, `clientSecretSet` and `redirectUri` for `oidc`,
    `audience` and `mcpServerIds` for `external_as`. The client secret itself never."""

    id: str
    orgId: str
    name: str
    kind: Literal["oidc", "external_as"]
    issuer: str
    scopes: list[str]
    claim: str
    allowCreateEndUsers: bool
    allowPrivateNetwork: bool
    createdAt: str
    updatedAt: str
    clientId: str | None = None
    clientSecretSet: bool | None = None
    redirectUri: str | None = None
    audience: str | None = None
    mcpServerIds: list[str] | None = None


IdentityProviderAnswer = one("identityProvider", IdentityProviderOut)


async def _checked(gw: Gateway, principal: Principal, fields: IdpFields) -> IdpFields:
    """The rules every create and update meets, whatever the body left out."""
    try:
        issuer = urlsplit(fields.issuer)
        port = issuer.port  # raises for a port that is not a number in range
    except ValueError:
        raise ValidationFailed("issuer is not a valid URL", field="issuer") from None
    if not issuer.hostname or port == 0:
        raise ValidationFailed("issuer is not a valid URL", field="issuer")
    if issuer.scheme != "https" and not fields.allow_private_network:
        raise ValidationFailed(
            "issuer must be an https URL (http only with allowPrivateNetwork)", field="issuer"
        )
    if issuer.query or issuer.fragment:
        raise ValidationFailed("issuer must have no query or fragment", field="issuer")
    if fields.kind is IdpKind.OIDC:
        if fields.client_id is None:
            raise ValidationFailed("An oidc provider needs its clientId", field="clientId")
        if fields.server_ids:
            raise ValidationFailed(
                "mcpServerIds is for external_as providers only", field="mcpServerIds"
            )
        if fields.audience is not None:
            raise ValidationFailed("audience is for external_as providers only", field="audience")
    else:
        if fields.client_id is not None or fields.client_secret is not None:
            raise ValidationFailed(
                "An external_as provider has no client credentials", field="clientId"
            )
        for server_id in fields.server_ids:
            server = await gw.store.mcp_servers.get(server_id, principal.org_id)
            if server is None:
                raise ValidationFailed(
                    "mcpServerIds names an MCP server that does not exist", field="mcpServerIds"
                )
    if len(set(fields.server_ids)) != len(fields.server_ids):
        raise ValidationFailed("mcpServerIds lists a server twice", field="mcpServerIds")
    return fields


def _json(gw: Gateway, idp: IdentityProvider) -> dict[str, object]:
    return {"identityProvider": idp.to_json(redirect_uri(gw))}


@operation(
    "Create an identity provider (oidc sign-in, or an external authorization server)",
    body=CreateIdp,
    responses={201: IdentityProviderAnswer},
    errors=[ErrorCode.DUPLICATE],
)
async def create_idp(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    body = await read_body(request, CreateIdp)
    kind = IdpKind(body.kind)
    if kind is IdpKind.OIDC and body.clientSecret is None:
        raise ValidationFailed("An oidc provider needs its clientSecret", field="clientSecret")
    default_scopes = DEFAULT_EXTERNAL_SCOPES if kind is IdpKind.EXTERNAL_AS else ()
    fields = await _checked(
        gw,
        principal,
        IdpFields(
            name=body.name,
            kind=kind,
            issuer=body.issuer,
            client_id=body.clientId,
            client_secret=body.clientSecret,
            scopes=tuple(body.scopes) if body.scopes is not None else default_scopes,
            claim=body.claim,
            allow_create_end_users=body.allowCreateEndUsers,
            audience=body.audience,
            allow_private_network=body.allowPrivateNetwork,
            server_ids=tuple(body.mcpServerIds or ()),
        ),
    )
    async with gw.store.db.write(principal.actor) as txn:
        created = await providers(gw).create(txn, principal.org_id, fields)
    return ok(_json(gw, created), status=201)


async def _idp(request: Request) -> tuple[Gateway, Principal, IdentityProvider]:
    gw, principal = await caller(request)
    found = await providers(gw).get(
        principal.org_id, path_param(request, "idp_id", "Identity provider")
    )
    if found is None:
        raise NotFound("Identity provider")
    return gw, principal, found


@operation(
    "List the org's identity providers",
    responses={200: listing("identityProviders", IdentityProviderOut)},
)
async def list_idps(request: Request) -> Response:
    gw, principal = await caller(request)
    found = await providers(gw).list(principal.org_id)
    return ok(
        {"identityProviders": [i.to_json(redirect_uri(gw)) for i in found], "total": len(found)}
    )


@operation("Get an identity provider", responses={200: IdentityProviderAnswer})
async def get_idp(request: Request) -> Response:
    gw, _principal, found = await _idp(request)
    return ok(_json(gw, found))


@operation(
    "Update an identity provider (a new clientSecret replaces the sealed one)",
    body=UpdateIdp,
    responses={200: IdentityProviderAnswer},
    errors=[ErrorCode.NO_UPDATES, ErrorCode.DUPLICATE],
)
async def update_idp(request: Request) -> Response:
    gw, principal, current = await _idp(request)
    principal.check_org_wide()
    body = await read_body(request, UpdateIdp)
    given = body.model_fields_set
    if not given:
        raise Refusal(ErrorCode.NO_UPDATES, "No fields provided to update")
    for name in ("name", "kind", "issuer", "claim", "allowCreateEndUsers", "allowPrivateNetwork"):
        if name in given and getattr(body, name) is None:
            raise ValidationFailed(f"{name} cannot be null", field=name)
    if body.kind is not None and body.kind != current.kind.value:
        raise ValidationFailed("kind cannot be changed; create another provider", field="kind")

    fields = await _checked(
        gw,
        principal,
        IdpFields(
            name=body.name or current.name,
            kind=current.kind,
            issuer=body.issuer or current.issuer,
            client_id=body.clientId if "clientId" in given else current.client_id,
            client_secret=body.clientSecret,
            scopes=tuple(body.scopes) if body.scopes is not None else current.scopes,
            claim=body.claim or current.claim,
            allow_create_end_users=(
                current.allow_create_end_users
                if body.allowCreateEndUsers is None
                else body.allowCreateEndUsers
            ),
            audience=body.audience if "audience" in given else current.audience,
            allow_private_network=(
                current.allow_private_network
                if body.allowPrivateNetwork is None
                else body.allowPrivateNetwork
            ),
            server_ids=(
                tuple(body.mcpServerIds or ()) if "mcpServerIds" in given else current.server_ids
            ),
        ),
    )
    async with gw.store.db.write(principal.actor) as txn:
        updated = await providers(gw).update(txn, current, fields)
    # A new issuer (or network rule) must not be served the old one's cached documents.
    discovery.forget(current.issuer.rstrip("/"))
    return ok(_json(gw, updated))


@operation("Delete an identity provider", responses={200: Deleted})
async def delete_idp(request: Request) -> Response:
    gw, principal, current = await _idp(request)
    principal.check_org_wide()
    async with gw.store.db.write(principal.actor) as txn:
        await providers(gw).delete(txn, current)
    return ok({"deleted": True, "id": current.id})


routes = [
    Route("/identity-providers", list_idps, methods=["GET"]),
    Route("/identity-providers", create_idp, methods=["POST"]),
    Route("/identity-providers/{idp_id}", get_idp, methods=["GET"]),
    Route("/identity-providers/{idp_id}", update_idp, methods=["PATCH"]),
    Route("/identity-providers/{idp_id}", delete_idp, methods=["DELETE"]),
]
