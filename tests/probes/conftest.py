"""Fixtures of the probes: a two-org world copied from a template, and a recording upstream."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import httpx2
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from probes.world import World, build_world, close_world
from treadle.app import Gateway
from treadle.http_app import build_http_app
from treadle.mcp.runtime import McpRuntime
from treadle.settings import Settings, sqlite_url

from loopback import serve
from mcp_harness import test_catalog

T = TypeVar("T")
Handler = Callable[[httpx2.Request], httpx2.Response]


def _not_found(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(404, json={"message": "Not Found"})


@dataclass
class Upstream:
    """Every outbound request the gateway makes, answered by `handler`, never the network."""

    handler: Handler = _not_found
    seen: list[httpx2.Request] = field(default_factory=list)

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.seen.append(request)
        return self.handler(request)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self._answer), trust_env=False)


def probe_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir, database_url=sqlite_url(data_dir / "treadle.db"), secret_key=None
    )


@dataclass(frozen=True)
class Template:
    data_dir: Path
    world: World  # its clients are closed: `World.on` makes live ones


async def _build(data_dir: Path) -> Template:
    upstream = Upstream()
    async with upstream.client() as http:
        gateway = await Gateway.open(probe_settings(data_dir), http=http, catalog=test_catalog())
        try:
            world = await build_world(gateway)
            await close_world(world)
        finally:
            await gateway.close()
    return Template(data_dir, world)


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return anyio.run(_build, tmp_path_factory.mktemp("probe-world") / "data")


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@asynccontextmanager
async def open_world(
    data_dir: Path, template: Template, upstream: Upstream
) -> AsyncIterator[World]:
    """A fresh copy of the two-org world in `data_dir`, its outbound calls answered by
    `upstream`."""
    shutil.copytree(template.data_dir, data_dir)
    async with upstream.client() as http:
        gateway = await Gateway.open(probe_settings(data_dir), http=http, catalog=test_catalog())
        opened = template.world.on(gateway)
        try:
            yield opened
        finally:
            await close_world(opened)
            await gateway.close()


@pytest.fixture
async def world(
    tmp_path: Path, world_template: Template, upstream: Upstream
) -> AsyncIterator[World]:
    async with open_world(tmp_path / "data", world_template, upstream) as opened:
        yield opened


@asynccontextmanager
async def serving(gateway: Gateway) -> AsyncIterator[str]:
    """The gateway's whole HTTP app (REST, MCP, pages) on a loopback port: its base URL."""
    app = build_http_app(gateway, McpRuntime(gateway, poll_seconds=0.05))
    async with serve(app, lifespan="on") as port:
        yield f"http://127.0.0.1:{port}"


@dataclass
class Live:
    """A world whose event loop runs in a thread of its own, for synchronous callers
    (Hypothesis draws and state machines): `call` runs a coroutine function there."""

    portal: BlockingPortal
    world: World

    def call(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        return self.portal.call(func, *args)


@pytest.fixture
def live(tmp_path: Path, world_template: Template, upstream: Upstream) -> Iterator[Live]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            open_world(tmp_path / "data", world_template, upstream)
        ) as opened,
    ):
        yield Live(portal, opened)


@dataclass
class Served:
    """A world served over real HTTP on loopback, from an event loop in a thread of its own:
    synchronous callers (Hypothesis) send requests with a blocking client."""

    live: Live
    base_url: str


@asynccontextmanager
async def _open_served(
    data_dir: Path, template: Template, upstream: Upstream
) -> AsyncIterator[tuple[World, str]]:
    async with (
        open_world(data_dir, template, upstream) as opened,
        serving(opened.gateway) as base_url,
    ):
        yield opened, base_url


@pytest.fixture
def served(tmp_path: Path, world_template: Template, upstream: Upstream) -> Iterator[Served]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            _open_served(tmp_path / "data", world_template, upstream)
        ) as (opened, base_url),
    ):
        yield Served(Live(portal, opened), base_url)
