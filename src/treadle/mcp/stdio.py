"""`treadle stdio`: MCP over stdin/stdout for Claude Desktop and other local clients."""

from __future__ import annotations

import gc

import anyio
from mcp.server.stdio import stdio_server

from treadle.app import Gateway
from treadle.mcp.binding import Binding
from treadle.mcp.runtime import McpRuntime


async def serve_stdio(gateway: Gateway, binding: Binding) -> None:
    runtime = McpRuntime(gateway)
    face = runtime.bound_face(binding)
    # As in `treadle serve`: the start-up heap lives as long as the process, keep full
    # collections off it.
    gc.collect()
    gc.freeze()
    async with anyio.create_task_group() as tg:
        # Watches the database, so changes made by `treadle serve` or the CLI reach us too.
        tg.start_soon(runtime.hub.run)
        tg.start_soon(gateway.run_background)
        async with stdio_server() as (read, write):
            await face.server.run(read, write, face.server.create_initialization_options())
        tg.cancel_scope.cancel()
