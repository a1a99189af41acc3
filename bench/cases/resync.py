"""Case 3: a configuration change through the REST API reaches connected clients.

Clients (SDK `Client`s): handshake-era over HTTP (message_handler gets
notifications/tools/list_changed), handshake-era over stdio (`treadle stdio --server`
subprocesses on the same database, which learn of the change by polling), and 2026-07-28
`subscriptions/listen` streams. Each round adds an integration alias through REST; latency is
measured from the commit (the `createdAt` of the change's activity record, written in the same
transaction) and from the moment the REST request was sent, to each client's receipt.

Baseline: the bare SDK server with the same HTTP clients (it has no stdio sharing a database),
where `POST /admin/change` adds a tool and broadcasts to both eras in the request.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.session import MessageHandlerFnT
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ToolListChangedNotification

from bench.config import configure, create_server, create_workspace
from bench.env import Env
from bench.procs import child_env
from bench.stats import summary

ROUND_TIMEOUT = 5.0


class Receipts:
    """First receipt per client per round (wall clock, to compare with the commit time)."""

    def __init__(self) -> None:
        self.round = -1
        self.got: dict[str, float] = {}
        self.kinds: dict[str, str] = {}
        self.complete = anyio.Event()

    def expect(self, round_: int) -> None:
        self.round = round_
        self.got = {}
        self.complete = anyio.Event()

    def mark(self, client: str) -> None:
        if self.round >= 0 and client not in self.got:
            self.got[client] = time.time()
            if len(self.got) == len(self.kinds):
                self.complete.set()


def _handler(receipts: Receipts, client: str) -> MessageHandlerFnT:
    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            receipts.mark(client)

    return on_message


async def _connect_all(
    stack: AsyncExitStack,
    receipts: Receipts,
    url: str,
    token: str | None,
    http_count: int,
    listen_count: int,
    stdio: StdioServerParameters | None,
    stdio_count: int,
    errlog: Any,
) -> list[tuple[str, Client]]:
    """Opens every client in `stack` (outside any task group: their own task groups must not
    nest in one that is cancelled first); returns the 2026-07-28 clients, still to listen."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = await stack.enter_async_context(
        httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(60),
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None),
        )
    )

    async def legacy_http(i: int) -> None:
        name = f"http-{i}"
        client = await stack.enter_async_context(
            Client(
                streamable_http_client(url, http_client=http),
                mode="legacy",
                message_handler=_handler(receipts, name),
            )
        )
        await client.list_tools()  # any request registers the session for notifications
        receipts.kinds[name] = "handshake HTTP"

    async def legacy_stdio(i: int) -> None:
        assert stdio is not None
        name = f"stdio-{i}"
        client = await stack.enter_async_context(
            Client(
                stdio_client(stdio, errlog=errlog),
                mode="legacy",
                message_handler=_handler(receipts, name),
            )
        )
        await client.list_tools()
        receipts.kinds[name] = "handshake stdio"

    # Connections opened one after another: the exit stack is unwound in this task.
    for i in range(stdio_count):
        await legacy_stdio(i)
    for i in range(http_count):
        await legacy_http(i)
    modern = []
    for i in range(listen_count):
        client = await stack.enter_async_context(
            Client(streamable_http_client(url, http_client=http), mode="2026-07-28")
        )
        modern.append((f"listen-{i}", client))
    return modern


async def _listen_all(
    tg: anyio.abc.TaskGroup, receipts: Receipts, clients: list[tuple[str, Client]]
) -> None:
    for name, client in clients:
        ready = anyio.Event()

        async def consume(name: str, client: Client, ready: anyio.Event) -> None:
            async with client.listen(tools_list_changed=True) as sub:
                receipts.kinds[name] = "2026-07-28 listen"
                ready.set()
                async for _event in sub:
                    receipts.mark(name)

        tg.start_soon(consume, name, client, ready)
        with anyio.fail_after(30):
            await ready.wait()


async def _rounds(
    receipts: Receipts, rounds: int, change: Callable[[int], Awaitable[float | None]]
) -> dict[str, Any]:
    from_commit: dict[str, list[float]] = {}
    from_send: dict[str, list[float]] = {}
    missed = 0
    for round_ in range(rounds):
        receipts.expect(round_)
        sent = time.time()
        committed = await change(round_)
        with anyio.move_on_after(ROUND_TIMEOUT):
            await receipts.complete.wait()
        missed += len(receipts.kinds) - len(receipts.got)
        for client, at in receipts.got.items():
            kind = receipts.kinds[client]
            from_send.setdefault(kind, []).append((at - sent) * 1000)
            if committed is not None:
                from_commit.setdefault(kind, []).append((at - committed) * 1000)
        await anyio.sleep(0.6)  # let the hubs settle before the next change
    everyone_send = [v for values in from_send.values() for v in values]
    everyone_commit = [v for values in from_commit.values() for v in values]
    return {
        "clients": len(receipts.kinds),
        "rounds": rounds,
        "missed": missed,
        "fromCommitMs": summary(everyone_commit) if everyone_commit else None,
        "fromRequestMs": summary(everyone_send),
        "byTransportFromCommit": {k: summary(v) for k, v in from_commit.items()},
        "byTransportFromRequest": {k: summary(v) for k, v in from_send.items()},
    }


def _parse_iso(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _treadle(env: Env) -> dict[str, Any]:
    sizes = env.sizes
    receipts = Receipts()
    async with env.treadle.rest() as rest:
        workspace = await create_workspace(rest, "resync")
        await configure(rest, workspace, "bench-one", "r-base")
        server_id, token = await create_server(rest, workspace, "resync")
        stdio = StdioServerParameters(
            command=sys.executable,
            args=["-m", "treadle", "stdio", "--server", server_id],
            env=child_env(env.treadle.data_dir),
        )

        async def change(round_: int) -> float | None:
            await configure(rest, workspace, "bench-one", f"r{round_:03d}")
            found = await rest.get(
                "/activity", params={"workspaceId": workspace, "type": "config_change", "limit": 1}
            )
            return _parse_iso(found.json()["activity"][0]["createdAt"])

        errlog_path = Path(env.treadle.data_dir) / "stdio-clients.log"
        with errlog_path.open("w") as errlog:
            async with AsyncExitStack() as stack:
                began = time.perf_counter()
                modern = await _connect_all(
                    stack,
                    receipts,
                    env.treadle.mcp_url(server_id),
                    token,
                    sizes.resync_http,
                    sizes.resync_listen,
                    stdio,
                    sizes.resync_stdio,
                    errlog,
                )
                async with anyio.create_task_group() as tg:
                    await _listen_all(tg, receipts, modern)
                    connect_seconds = time.perf_counter() - began
                    await anyio.sleep(1.0)  # stdio hubs read their starting version
                    result = await _rounds(receipts, sizes.resync_rounds, change)
                    tg.cancel_scope.cancel()
    result["connectSeconds"] = round(connect_seconds, 2)
    return result


async def _bare(env: Env) -> dict[str, Any]:
    sizes = env.sizes
    receipts = Receipts()
    # Same number of clients, HTTP only: the stdio share goes to the HTTP handshake clients.
    http_count = sizes.resync_http + sizes.resync_stdio
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as admin:

        async def change(_round: int) -> float | None:
            response = await admin.post(f"{env.bare_one.base_url}/admin/change")
            response.raise_for_status()
            return None

        async with AsyncExitStack() as stack:
            modern = await _connect_all(
                stack,
                receipts,
                env.bare_one.mcp_url,
                None,
                http_count,
                sizes.resync_listen,
                None,
                0,
                None,
            )
            async with anyio.create_task_group() as tg:
                await _listen_all(tg, receipts, modern)
                result = await _rounds(receipts, sizes.resync_rounds, change)
                tg.cancel_scope.cancel()
    return result


async def run(env: Env) -> dict[str, Any]:
    return {"treadle": await _treadle(env), "bare": await _bare(env)}
