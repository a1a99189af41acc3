"""Long calls: progress notifications while they run, and cancellation that stops them.

In memory, with a runtime whose progress interval is short; progress and cancellation are
handled by the one `McpFace`, whatever the transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import REQUEST_TIMEOUT, CallToolResult

from treadle.catalog.model import Action, ActionContext, AuthKind, Integration
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime

import testkit_integrations
from mcp_harness import ERAS, McpEnv

pytestmark = pytest.mark.anyio
every_era = pytest.mark.parametrize("era", ERAS)

PROGRESS_SECONDS = 0.05


@pytest.fixture
def release() -> anyio.Event:
    """A fresh event for testkit's `wait` action, so no test releases another's call."""
    event = anyio.Event()
    testkit_integrations.release["event"] = event
    return event


@asynccontextmanager
async def _client(
    mcp_env: McpEnv, era: str, progress_seconds: float = PROGRESS_SECONDS
) -> AsyncIterator[Client]:
    if not mcp_env.server_id:
        await mcp_env.create_server()
    runtime = McpRuntime(mcp_env.runtime.gateway, progress_seconds=progress_seconds)
    binding = await bind_server(runtime.gateway.store, mcp_env.server_id, None)
    async with Client(runtime.bound_face(binding).server, mode=era) as client:
        yield client


class Probe:
    """An action that says when it starts and when it is stopped (cancelled)."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.stopped = anyio.Event()
        self.finished = False

    async def hold(self, _ctx: ActionContext, _data: dict[str, Any]) -> dict[str, Any]:
        self.started.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            self.stopped.set()
            raise
        self.finished = True
        return {}

    def integration(self) -> Integration:
        empty = {"type": "object", "properties": {}}
        return Integration(
            name="probe",
            display_name="Probe",
            description="Holds a call open until it is cancelled.",
            auth_kind=AuthKind.NONE,
            actions=(Action("hold", "Hold", "Runs until cancelled.", empty, self.hold),),
        )


async def _with_probe(mcp_env: McpEnv) -> Probe:
    probe = Probe()
    mcp_env.runtime.gateway.catalog.add(probe.integration())
    await mcp_env.configure("probe", integrationAlias="probe")
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    return probe


# -- progress -------------------------------------------------------------------------------


@every_era
async def test_a_long_call_sends_progress_to_a_client_that_asked_for_it(
    mcp_env: McpEnv, era: str, release: anyio.Event
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["wait"])
    seen: list[tuple[float, float | None, str | None]] = []
    enough = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))
        if len(seen) >= 3:
            enough.set()

    results: list[CallToolResult] = []
    async with _client(mcp_env, era) as client, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await client.call_tool("kit__wait", {}, progress_callback=on_progress))

        tg.start_soon(call)
        with anyio.fail_after(5):
            await enough.wait()
        release.set()

    assert len(results) == 1
    assert not results[0].is_error
    assert results[0].structured_content == {"released": True}
    progress = [p for p, _total, _message in seen]
    assert progress == sorted(progress)
    assert len(set(progress)) == len(progress)
    assert all(p > 0 for p in progress)


@every_era
async def test_a_call_that_ends_within_the_interval_sends_no_progress(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    seen: list[float] = []

    async def on_progress(progress: float, _total: float | None, _message: str | None) -> None:
        seen.append(progress)

    async with _client(mcp_env, era, progress_seconds=30) as client:
        result = await client.call_tool(
            "kit__echo", {"text": "hi", "channel": "C"}, progress_callback=on_progress
        )

    assert not result.is_error
    assert seen == []


# -- cancellation ---------------------------------------------------------------------------


@every_era
async def test_cancelling_the_calling_task_stops_the_action(mcp_env: McpEnv, era: str) -> None:
    probe = await _with_probe(mcp_env)
    async with _client(mcp_env, era) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "probe__hold", {})
            with anyio.fail_after(5):
                await probe.started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            await probe.stopped.wait()
        # The session carries on.
        after = await client.call_tool("kit__echo", {"text": "still here", "channel": "C"})

    assert not probe.finished
    assert not after.is_error


@every_era
async def test_a_client_timeout_stops_the_action(mcp_env: McpEnv, era: str) -> None:
    probe = await _with_probe(mcp_env)
    async with _client(mcp_env, era) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("probe__hold", {}, read_timeout_seconds=1.0)
        assert raised.value.error.code == REQUEST_TIMEOUT
        assert probe.started.is_set()
        with anyio.fail_after(5):
            await probe.stopped.wait()
        after = await client.call_tool("kit__echo", {"text": "still here", "channel": "C"})

    assert not probe.finished
    assert not after.is_error


@pytest.mark.parametrize("era", ["legacy"])
async def test_a_client_that_leaves_at_once_leaves_no_database_query_cancelled_midway(
    mcp_env: McpEnv, era: str
) -> None:
    # A query cancelled midway leaves aiosqlite a close that never finishes (the gateway
    # then hangs on shutdown). The handshake era's `notifications/initialized` starts work
    # nobody awaits; a client leaving straight away must not cut it short.
    await mcp_env.configure("testkit", integrationAlias="kit")
    for _ in range(15):
        async with _client(mcp_env, era):
            pass

    stuck = [
        task for task in asyncio.all_tasks() if "_terminate_graceful_close" in repr(task.get_coro())
    ]
    assert stuck == []
