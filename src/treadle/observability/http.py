"""The one HTTP middleware of observability: per request a request id (`X-Request-Id`, the
caller's when it sends a sane one), the access log line, the HTTP metrics by route template,
and (when tracing is on) the request's span.

Routes are labelled by template (`/api/v1/workspaces/{workspace_id}`), found from the endpoint
Starlette's router matched, so a label never holds an ID or a caller's path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from treadle.observability import logs

log = logging.getLogger("treadle.access")

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Enough of an MCP POST body to read its JSON-RPC method and tool name (json log format only).
PEEK_BYTES = 16 * 1024


def loggable(path: str) -> str:
    """The path with control characters escaped: a decoded `%0A` must not forge a log line."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), path)


def templates(routes: list[BaseRoute], prefix: str = "") -> dict[Any, str]:
    """Endpoint -> route template, for every route under `routes`."""
    found: dict[Any, str] = {}
    for route in routes:
        if isinstance(route, Mount):
            if route.routes:
                found.update(templates(route.routes, prefix + route.path))
            else:  # an app of its own (static files): its endpoint is the app
                found[route.app] = prefix + route.path + "/{path}"
        elif isinstance(route, Route):
            found[route.endpoint] = prefix + re.sub(r":[a-z]+}", "}", route.path)
    return found


def _rpc_fields(chunks: list[bytes]) -> dict[str, Any]:
    try:
        message = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        return {}
    batch = message if isinstance(message, list) else [message]
    batch = [m for m in batch if isinstance(m, dict)]
    methods = [m.get("method") for m in batch]
    fields: dict[str, Any] = {}
    if methods and all(isinstance(m, str) for m in methods):
        fields["rpcMethod"] = ",".join(m[:64] for m in methods)
    for m in batch:
        params = m.get("params")
        if m.get("method") == "tools/call" and isinstance(params, dict):
            name = params.get("name")
            if isinstance(name, str):
                fields["tool"] = loggable(name[:128])
    return fields


class AccessLog:
    """One line per request, the HTTP metrics, the request span. The path only: query
    strings may carry tokens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.json = os.environ.get("TREADLE_LOG_FORMAT", "text").lower() == "json"
        self._templates: dict[Any, str] | None = None

    def _route(self, scope: Scope) -> str:
        if self._templates is None:
            router = getattr(scope.get("app"), "router", None)
            self._templates = templates(getattr(router, "routes", []))
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "unmatched"
        try:
            return str(self._templates.get(endpoint, "unmatched"))
        except TypeError:  # a Mount's router (no route under it matched): unhashable
            return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | str = 500
        request_id = _request_id(scope)
        fields: dict[str, Any] = {"requestId": request_id}
        header = (b"x-request-id", request_id.encode())

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        path: str = scope["path"]
        method: str = scope["method"]
        is_mcp = path.startswith("/mcp/")
        app = scope.get("app")
        state = getattr(app, "state", None)
        metrics = getattr(state, "metrics", None)
        tracer = getattr(state, "tracing", None)
        if tracer is not None and is_mcp and method == "POST":
            receive = await tracer.read_meta(scope, receive)
        peeked: list[bytes] = []
        if is_mcp and method == "POST" and self.json:
            inner = receive

            async def peek() -> Message:
                message = await inner()
                if message["type"] == "http.request" and sum(map(len, peeked)) < PEEK_BYTES:
                    peeked.append(message.get("body", b""))
                return message

            receive = peek
        listening = is_mcp and method == "GET" and metrics is not None
        if listening and metrics is not None:
            metrics.listen_streams.inc()
        token = logs.begin(fields)
        logs.carry(scope, fields)
        try:
            if tracer is not None:
                with tracer.request_span(scope, fields) as span:
                    await self.app(scope, receive, observe)
                    tracer.finish_request(span, method, self._route(scope), status)
            else:
                await self.app(scope, receive, observe)
        except ClientDisconnect:
            # The client left mid-request: nothing to answer and nothing broke (no 500, no trace).
            status = "client-disconnected"
        finally:
            logs.end(token)
            elapsed = time.perf_counter() - started
            if listening and metrics is not None:
                metrics.listen_streams.dec()
            route = self._route(scope)
            if metrics is not None:
                metrics.request_finished(route, method, str(status), elapsed)
            if peeked:
                fields.update(_rpc_fields(peeked))
            fields.update(
                method=method,
                path=loggable(path[:200]),
                route=route,
                status=status,
                durationMs=round(elapsed * 1000, 1),
            )
            log.info(
                "%s %s %s %.1fms",
                method,
                fields["path"],
                status,
                elapsed * 1000,
                extra={"fields": fields},
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = bytes(value).decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return os.urandom(8).hex()
