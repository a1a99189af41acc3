"""`GET /api/v1/openapi.json`: the document of the routes this application really mounts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from treadle.api.openapi import build_document, operation
from treadle.api.responses import ok


class OpenApiDocument(BaseModel):
    model_config = ConfigDict(extra="allow", title="OpenApiDocument")

    openapi: str
    paths: dict[str, Any]


@operation(
    "This document: OpenAPI 3.1 of every /api/v1 operation",
    responses={200: OpenApiDocument},
    authenticated=False,
)
async def openapi_json(request: Request) -> Response:
    # Built once per application from its own routes (they do not change while it runs).
    cached: dict[str, Any] | None = getattr(request.app.state, "openapi_document", None)
    if cached is None:
        mounted = [
            route
            for route in request.app.router.routes
            if isinstance(route, Mount) and route.path == "/api/v1"
        ]
        cached = build_document(mounted)
        request.app.state.openapi_document = cached
    return ok(cached)
