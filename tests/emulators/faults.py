"""Request log and per-test fault injection shared by the emulators.

A fault matches requests by method and path suffix; it either answers in place of the
emulator (an error status with the provider's body and headers) or holds the request until
the test sets an event, then lets the emulator answer normally.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the emulator received it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)


@dataclass(slots=True)
class _Fault:
    method: str | None
    path_suffix: str
    times: int
    response: Callable[[], Response] | None = None
    hold: anyio.Event | None = None


@dataclass
class Recorder:
    seen: list[Seen] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)

    def fail(
        self,
        path_suffix: str,
        status: int,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` matching requests get this answer instead."""

        def answer() -> Response:
            content = body if isinstance(body, bytes | str) else json.dumps(body)
            media = "text/html" if isinstance(body, bytes | str) else "application/json"
            return Response(content, status, headers=headers, media_type=media)

        self._faults.append(_Fault(method, path_suffix, times, response=answer))

    def hold(self, path_suffix: str, *, method: str | None = None) -> anyio.Event:
        """The next matching request waits until the returned event is set."""
        released = anyio.Event()
        self._faults.append(_Fault(method, path_suffix, 1, hold=released))
        return released

    def calls(self, path_suffix: str, method: str | None = None) -> list[Seen]:
        return [
            seen
            for seen in self.seen
            if seen.path.endswith(path_suffix) and method in (None, seen.method)
        ]

    def route(self, path: str, handler: Handler, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.seen.append(
                Seen(
                    request.method,
                    request.url.path,
                    list(request.query_params.multi_items()),
                    dict(request.headers),
                    body,
                )
            )
            fault = self._take(request.method, request.url.path)
            if fault is not None and fault.hold is not None:
                await fault.hold.wait()
            if fault is not None and fault.response is not None:
                return fault.response()
            return await handler(request)

        return Route(path, endpoint, methods=methods)

    def _take(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if path.endswith(fault.path_suffix) and fault.method in (None, method):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None
