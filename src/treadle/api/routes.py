"""The `/api/v1` application: routes, the error mapping, and one log line per request."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
from treadle.store.outage import database_unavailable, driver_error_types

log = logging.getLogger("treadle.access")

# What a 503 SERVICE_UNAVAILABLE asks the client to wait before retrying.
RETRY_AFTER_SECONDS = 1

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


def _unavailable(exc: Exception) -> Response:
    # Not a defect: a restart, failover or full connection limit. The class names it; a
    # driver's message may carry host names, so it stays out of the answer and the log.
    log.warning("database unavailable: %s", type(exc).__name__)
    return error(
        ErrorCode.SERVICE_UNAVAILABLE,
        "The database is unavailable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _on_driver_error(_request: Request, exc: Exception) -> Response:
    """A database driver's exception (or the store's DatabaseUnreachable): 503 when the
    database could not be reached; anything else is a defect and goes on to `_on_crash`."""
    if not database_unavailable(exc):
        raise exc
    return _unavailable(exc)


async def _on_crash(_request: Request, exc: Exception) -> Response:
    if database_unavailable(exc):  # wrapped in another exception on its way up
        return _unavailable(exc)
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


# Starlette answers `Exception` last (and re-raises it, for the server's log); the driver
# classes are answered where they are caught, so a 503 is no crash in the server's log.
EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    Refusal: _on_refusal,
    HTTPException: _on_http,
    **dict.fromkeys(driver_error_types(), _on_driver_error),
    Exception: _on_crash,
}


def build_app(gateway: object, extra_routes: list[Mount] | None = None) -> Starlette:
    app = Starlette(
        routes=[api_routes(), *(extra_routes or [])],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.gateway = gateway
    app.add_middleware(AccessLog)
    return app
