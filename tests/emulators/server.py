"""Runs an emulator with uvicorn on 127.0.0.1 at an ephemeral port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, Protocol, TypeVar

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


class Emulated(Protocol):
    @property
    def app(self) -> ASGIApp: ...


E = TypeVar("E", bound=Emulated)


class _Server(uvicorn.Server):
    """Signals when it listens, so a test waits on an event rather than polling the port."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Yields the base URL (`http://127.0.0.1:PORT`) while `app` is served."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_config=None,
        access_log=False,
        http="h11",
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(5):
            await server.listening.wait()
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


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
