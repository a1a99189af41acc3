"""The `/api/v1` application: routes, the error mapping, and one log line per request."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from treadle.api import (
    actions,
    activity,
    api_keys,
    approval_policies,
    approvals,
    connections,
    document,
    end_users,
    identity_providers,
    integrations,
    mcp_oauth,
    mcp_servers,
    oauth_apps,
    partials,
    upstreams,
    workspace_integrations,
    workspaces,
)
from treadle.api.responses import error, refusal
from treadle.errors import ErrorCode, Refusal
from treadle.observability.http import AccessLog

log = logging.getLogger("treadle.access")

_HTTP_CODES = {
    404: (ErrorCode.NOT_FOUND, "No such endpoint"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed on this endpoint"),
}


async def _on_refusal(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return refusal(exc)


async def _on_http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, message = _HTTP_CODES.get(exc.status_code, (ErrorCode.VALIDATION_ERROR, "Bad request"))
    return error(code, message)


async def _on_crash(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error(ErrorCode.INTERNAL_ERROR, "Internal error; it has been logged")


def api_routes() -> Mount:
    routes = [
        Route("/openapi.json", document.openapi_json, methods=["GET"]),
        *workspaces.routes,
        *workspace_integrations.routes,
        *integrations.routes,
        *connections.routes,
        *end_users.routes,
        *partials.routes,
        *actions.routes,
        *activity.routes,
        *mcp_servers.routes,
        *mcp_oauth.routes,
        *approval_policies.routes,
        *approvals.routes,
        *oauth_apps.routes,
        *upstreams.routes,
        *api_keys.routes,
        *identity_providers.routes,
    ]
    return Mount("/api/v1", routes=routes)


EXCEPTION_HANDLERS = {Refusal: _on_refusal, HTTPException: _on_http, Exception: _on_crash}


def build_app(gateway: object, extra_routes: list[Mount] | None = None) -> Starlette:
    app = Starlette(
        routes=[api_routes(), *(extra_routes or [])],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.gateway = gateway
    app.add_middleware(AccessLog)
    return app
