"""`/api/v1/oauth-apps/{integrationName}`: an org's OAuth client for one integration.

Org-wide on purpose: one OAuth app (client id/secret registered with Slack, GitHub, Google)
serves every workspace of the org, as the provider sees one application. Writes need an
org-wide API key; the client secret goes in and never comes out.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.openapi import operation
from treadle.api.resources import Deleted, OAuthAppAnswer, listing
from treadle.api.resources import OAuthApp as OAuthAppOut
from treadle.api.responses import ok
from treadle.errors import NotFound, ValidationFailed
from treadle.oauth.providers import defaults_for

Url = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\s]+$")]
ClientSecret = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Scope = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"^[^\s,]+$")]


class PutOAuthApp(Body):
    clientId: ClientId
    # Optional on an update: the stored secret stays.
    clientSecret: ClientSecret | None = None
    scopes: Annotated[list[Scope], Field(max_length=100)] | None = None
    authorizationUrl: Url | None = None
    tokenUrl: Url | None = None
    # Base URL for the API calls of connections made through this app (GitHub Enterprise).
    apiBaseUrl: Url | None = None
    # Lets the token exchange and refresh reach a loopback or intranet token URL
    # (a self-hosted provider, or an emulator in tests). Off by default.
    allowPrivateNetwork: bool = False


def _integration(request: Request) -> str:
    return path_param(request, "integration_name", "Integration")


@operation(
    "Create or replace the org's OAuth app for an integration (201 when created)",
    body=PutOAuthApp,
    responses={200: OAuthAppAnswer, 201: OAuthAppAnswer},
)
async def put_app(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    name = _integration(request)
    if gw.catalog.get(name) is None:
        raise NotFound("Integration")
    body = await read_body(request, PutOAuthApp)
    defaults = defaults_for(name)
    authorize_url = body.authorizationUrl or (defaults.authorize_url if defaults else None)
    token_url = body.tokenUrl or (defaults.token_url if defaults else None)
    if authorize_url is None:
        raise ValidationFailed(
            f"'{name}' has no default authorization URL; set authorizationUrl",
            field="authorizationUrl",
        )
    if token_url is None:
        raise ValidationFailed(f"'{name}' has no default token URL; set tokenUrl", field="tokenUrl")
    scopes = body.scopes if body.scopes is not None else list(defaults.scopes if defaults else ())
    current = await gw.oauth.apps.get(principal.org_id, name)
    if current is None and body.clientSecret is None:
        raise ValidationFailed("A new OAuth app needs its clientSecret", field="clientSecret")
    async with gw.store.db.write(principal.actor) as txn:
        app, created = await gw.oauth.apps.put(
            txn,
            org_id=principal.org_id,
            integration_name=name,
            client_id=body.clientId,
            client_secret=body.clientSecret,
            scopes=tuple(scopes),
            authorize_url=authorize_url,
            token_url=token_url,
            api_base_url=body.apiBaseUrl,
            allow_private_network=body.allowPrivateNetwork,
        )
    return ok(
        {"oauthApp": app.to_json(), "redirectUri": gw.oauth.flow.redirect_uri},
        status=201 if created else 200,
    )


@operation("Get the OAuth app of an integration", responses={200: OAuthAppAnswer})
async def get_app(request: Request) -> Response:
    gw, principal = await caller(request)
    app = await gw.oauth.apps.get(principal.org_id, _integration(request))
    if app is None:
        raise NotFound("OAuth app")
    return ok({"oauthApp": app.to_json(), "redirectUri": gw.oauth.flow.redirect_uri})


@operation("List OAuth apps", responses={200: listing("oauthApps", OAuthAppOut)})
async def list_apps(request: Request) -> Response:
    gw, principal = await caller(request)
    apps = await gw.oauth.apps.list(principal.org_id)
    return ok({"oauthApps": [a.to_json() for a in apps], "total": len(apps)})


@operation("Delete the OAuth app of an integration", responses={200: Deleted})
async def delete_app(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    app = await gw.oauth.apps.get(principal.org_id, _integration(request))
    if app is None:
        raise NotFound("OAuth app")
    async with gw.store.db.write(principal.actor) as txn:
        await gw.oauth.apps.delete(txn, app)
    return ok({"deleted": True, "id": app.id})


routes = [
    Route("/oauth-apps", list_apps, methods=["GET"]),
    Route("/oauth-apps/{integration_name}", put_app, methods=["PUT"]),
    Route("/oauth-apps/{integration_name}", get_app, methods=["GET"]),
    Route("/oauth-apps/{integration_name}", delete_app, methods=["DELETE"]),
]
