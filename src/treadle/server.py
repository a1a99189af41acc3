"""`treadle serve`: uvicorn in this event loop, clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import uvicorn

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.http_app import build_http_app
from treadle.mcp.drain import StreamDrain
from treadle.read_deadlines import DeadlineProtocol, deadline_protocol
from treadle.settings import Settings

log = logging.getLogger("treadle")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling.

    After a graceful shutdown uvicorn re-raises the signal it caught, so the process would die
    of SIGTERM (exit status 143, resources left unclosed) instead of exiting 0. `serve` handles
    the signals itself.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _stop_on_signal(server: uvicorn.Server, drain: StreamDrain) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _signal in signals:
            if server.should_exit:
                server.force_exit = True  # asked twice: stop waiting for open connections
            server.should_exit = True
            # uvicorn now waits for open requests; MCP streams that only listen end only
            # when their clients hang up, so end them (treadle.mcp.drain).
            drain.start()


def http_protocol(settings: Settings) -> type[DeadlineProtocol]:
    """h11 whatever else is installed (httptools would bypass the deadlines), with them set."""
    return deadline_protocol(headers=settings.header_timeout, body=settings.body_timeout)


async def serve(settings: Settings, *, host: str, port: int) -> None:
    gateway = await Gateway.open(settings)
    try:
        result = await initialise(gateway.store, settings.data_dir)
        if result.created:
            log.info(
                "initialised %s; API key written to %s/api-key",
                settings.data_dir,
                settings.data_dir,
            )
        app = build_http_app(gateway)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=http_protocol(settings),
            access_log=False,  # treadle.access logs one line per request, without query strings
            log_config=None,
            lifespan="on",
            server_header=False,
        )
        server = _Server(config)
        # Everything built so far (modules, catalog, app) lives as long as the process: move
        # it out of the collector's reach, so full collections walk only what requests make
        # (measured: a full collection over the start-up heap took ~120 ms, ~5 ms after).
        gc.collect()
        gc.freeze()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signal, server, app.state.mcp_endpoint.drain)
            await server.serve()
            tasks.cancel_scope.cancel()
    finally:
        await gateway.close()
