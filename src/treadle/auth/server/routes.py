"""The authorization server's HTTP routes (the consent page lives in `treadle.web`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.auth.server import metadata, registration, token
from treadle.auth.server.authority import Authority
from treadle.web import consent_page

Handler = Callable[[Request, Authority], Awaitable[Response]]


def _bound(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        authority = request.app.state.mcp_auth
        assert isinstance(authority, Authority)
        return await handler(request, authority)

    return endpoint


async def _register(request: Request, authority: Authority) -> Response:
    return await registration.register(request, authority.registrations)


routes = [
    Route(
        "/.well-known/oauth-protected-resource/mcp/{server_id}",
        _bound(metadata.protected_resource),
        methods=["GET"],
    ),
    Route(
        "/.well-known/oauth-authorization-server",
        _bound(metadata.authorization_server),
        methods=["GET"],
    ),
    Route(metadata.REGISTER_PATH, _bound(_register), methods=["POST"]),
    Route(metadata.TOKEN_PATH, _bound(token.token), methods=["POST"]),
    Route(metadata.REVOKE_PATH, _bound(token.revoke), methods=["POST"]),
    Route(metadata.AUTHORIZE_PATH, consent_page.show, methods=["GET"]),
    Route(metadata.AUTHORIZE_PATH, consent_page.decide, methods=["POST"]),
]
