"""The whole HTTP application of `treadle serve`: the REST API and the MCP endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.routing import Route

from treadle import health
from treadle.api.routes import EXCEPTION_HANDLERS, api_routes
from treadle.app import Gateway
from treadle.auth.identity import signin
from treadle.auth.server import routes as authorization_routes
from treadle.body_guard import BodyGuard
from treadle.errors import SetupError
from treadle.mcp.http import McpEndpoint
from treadle.mcp.runtime import McpRuntime
from treadle.observability import metrics, tracing_wanted
from treadle.observability.http import AccessLog
from treadle.web import approval_page, connect_page, console, docs_page, oauth_routes


def build_http_app(gateway: Gateway, runtime: McpRuntime | None = None) -> Starlette:
    runtime = runtime or McpRuntime(gateway)
    endpoint = McpEndpoint(gateway, runtime)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with endpoint.running(), anyio.create_task_group() as tg:
            tg.start_soon(runtime.hub.run)
            tg.start_soon(gateway.run_background)
            yield
            tg.cancel_scope.cancel()

    app = Starlette(
        routes=[
            api_routes(),
            Route("/mcp/{server_id}", endpoint, methods=["GET", "POST", "DELETE"]),
            *approval_page.routes,
            *console.routes,
            *connect_page.routes,
            *oauth_routes.routes,
            *docs_page.routes,
            *health.routes,
            *metrics.routes,
            *signin.routes,
            *authorization_routes.routes,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.mcp = runtime
    app.state.mcp_endpoint = endpoint
    # One registry per application; the pipeline tells it of each call (its one hook).
    observed = metrics.Metrics(gateway, sessions=endpoint.sessions, hub=runtime.hub)
    gateway.executor.observers.append(observed.call_finished)
    app.state.metrics = observed
    if tracing_wanted():
        try:
            from treadle.observability import tracing
        except ImportError:
            raise SetupError(
                'OTEL_* variables ask for traces: pip install "treadle[otel]"'
            ) from None
        tracing.install(app, gateway, tracing.Tracing(tracing.provider_from_env()))
    app.state.mcp_auth = endpoint.auth
    app.add_middleware(BodyGuard)
    app.add_middleware(AccessLog)  # added last: outermost, so it sees what BodyGuard raises
    return app
