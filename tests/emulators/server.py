"""Runs an emulator with uvicorn on 127.0.0.1 at an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, Protocol, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

import loopback


class Emulated(Protocol):
    @property
    def app(self) -> ASGIApp: ...


E = TypeVar("E", bound=Emulated)


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Yields the base URL (`http://127.0.0.1:PORT`) while `app` is served."""
    async with loopback.serve(app, access_log=False, timeout_graceful_shutdown=2) as port:
        yield f"http://127.0.0.1:{port}"


class Switchboard(Generic[E]):
    """One served address, a fresh emulator behind it whenever a test asks for one.

    Starting uvicorn per test costs more than most tests; state must not leak between tests.
    """

    def __init__(self, make: Callable[[], E]) -> None:
        self._make = make
        self.current = make()

    def fresh(self) -> E:
        self.current = self._make()
        return self.current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.current.app(scope, receive, send)
