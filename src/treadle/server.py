"""`treadle serve`: uvicorn in this event loop, clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import errno
import gc
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import uvicorn

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.errors import SetupError
from treadle.http_app import build_http_app
from treadle.mcp.drain import StreamDrain
from treadle.read_deadlines import DeadlineProtocol, deadline_protocol
from treadle.settings import Settings, local_url

log = logging.getLogger("treadle")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling.

    After a graceful shutdown uvicorn re-raises the signal it caught, so the process would die
    of SIGTERM (exit status 143, resources left unclosed) instead of exiting 0. `serve` handles
    the signals itself.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # not when the application's startup failed
            self._on_started()


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


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says the gateway is ready: a port that is
    taken stops the command with one line saying so (SetupError), not a traceback."""
    if not 0 <= port <= 65535:  # getaddrinfo would quietly take it modulo 65536
        raise SetupError(f"--port must be between 0 and 65535, not {port}")
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise SetupError(f"cannot listen on host {host!r}: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restart may bind while the old socket sits in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise SetupError(
                f"port {port} on {host} is already in use; choose another with --port "
                f"(for example --port {port + 1 if port < 65535 else 8401})"
            ) from None
        raise SetupError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


async def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. `announce` gets the base URL once requests are served."""
    sock = bind(host, port)
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    settings = settings.bound_to(host, port)
    try:
        gateway = await Gateway.open(settings)
    except BaseException:
        sock.close()
        raise
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

        def started() -> None:
            # uvicorn says this only for sockets it bound itself; operators (and the tests)
            # wait for it.
            base_url = local_url(host, port)
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on %s (Press CTRL+C to quit)", base_url
            )
            log.info(
                "web console: %s/console (sign in with an API key)",
                settings.public_url.rstrip("/"),
            )
            if announce is not None:
                announce(base_url)

        server = _Server(config, started)
        # Everything built so far (modules, catalog, app) lives as long as the process: move
        # it out of the collector's reach, so full collections walk only what requests make
        # (measured: a full collection over the start-up heap took ~120 ms, ~5 ms after).
        gc.collect()
        gc.freeze()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signal, server, app.state.mcp_endpoint.drain)
            await server.serve(sockets=[sock])
            tasks.cancel_scope.cancel()
    finally:
        sock.close()
        await gateway.close()
