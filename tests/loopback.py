"""A real HTTP server on loopback for tests: an ephemeral port, started without polling."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp


class _Server(uvicorn.Server):
    """A uvicorn server that signals when it listens, so tests wait on an event, not a poll."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


@asynccontextmanager
async def serve(app: ASGIApp, **options: Any) -> AsyncIterator[int]:
    """Runs `app` on 127.0.0.1 at an ephemeral port and yields the port.

    `options` are more `uvicorn.Config` settings (`lifespan` and `http` included).
    """
    settings: dict[str, Any] = {"lifespan": "off", "log_config": None, "http": "h11", **options}
    config = uvicorn.Config(app, host="127.0.0.1", port=0, **settings)
    server = _Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(5):
            await server.listening.wait()
        try:
            yield server.servers[0].sockets[0].getsockname()[1]
        finally:
            server.should_exit = True
