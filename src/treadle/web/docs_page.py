"""`GET /docs`: the OpenAPI document of /api/v1 rendered by the Swagger UI shipped in the
package (treadle/web/static/swagger-ui, Apache-2.0, from npm swagger-ui-dist): no CDN, so it
works offline and behind a strict egress policy."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "swagger-ui"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>treadle API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/treadle-init.js"></script>
</body></html>
"""

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def docs(_request: Request) -> Response:
    return HTMLResponse(_PAGE, headers=_HEADERS)


routes = [
    Route("/docs", docs, methods=["GET"]),
    Mount("/docs/assets", StaticFiles(directory=ASSETS), name="docs-assets"),
]
