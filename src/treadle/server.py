"""`treadle serve`: uvicorn in this event loop, clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import logging

import uvicorn

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.http_app import build_http_app
from treadle.settings import Settings

log = logging.getLogger("treadle")


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
            access_log=False,  # treadle.access logs one line per request, without query strings
            log_config=None,
            lifespan="on",
            server_header=False,
        )
        server = uvicorn.Server(config)
        await server.serve()
    finally:
        await gateway.close()
