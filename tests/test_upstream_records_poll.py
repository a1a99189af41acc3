"""The upstream records' backstop poll reads them only when the configuration version moved.

Every process polls for upstream records changed by another process (`Federation.run`). The
records' stamps are a query through the database's worker thread, the version a microsecond
probe on SQLite: a poll that finds the version where it was reads nothing more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.settings import Settings

from conftest import Api, client_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def two(settings: Settings) -> AsyncIterator[tuple[Api, Api]]:
    async with AsyncExitStack() as stack:
        apis = []
        gateways = []
        for _ in range(2):
            gateway = await Gateway.open(settings)
            stack.push_async_callback(gateway.close)
            gateways.append(gateway)
        init = await initialise(gateways[0].store, settings.data_dir)
        assert init.api_key is not None
        for gateway in gateways:
            client = await stack.enter_async_context(client_for(gateway, init.api_key))
            apis.append(Api(client, gateway, init.org_id, init.workspace_id, init.api_key))
        yield apis[0], apis[1]


class _Gone(Exception):
    """The database went away for one read."""


def count_stamp_reads(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    records = api.gateway.federation.records
    reads = [0]
    original = records.stamps

    async def counted() -> Any:
        reads[0] += 1
        return await original()

    monkeypatch.setattr(records, "stamps", counted)
    return reads


async def test_a_poll_with_no_change_reads_no_records(
    two: tuple[Api, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    federation = a.gateway.federation
    await federation.load()
    reads = count_stamp_reads(a, monkeypatch)
    for _ in range(3):
        await federation.load(if_version_moved=True)
    assert reads[0] == 0
    made = await b.post("/workspaces", {"name": "elsewhere"})  # another process's change
    assert made.status_code == 201
    await federation.load(if_version_moved=True)
    assert reads[0] == 1
    await federation.load(if_version_moved=True)
    assert reads[0] == 1
    await federation.load()  # woken by an event: always read
    assert reads[0] == 2


async def test_a_load_that_failed_is_tried_again_on_the_next_poll(
    two: tuple[Api, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    federation = a.gateway.federation
    await federation.load()
    made = await b.post("/workspaces", {"name": "elsewhere"})
    assert made.status_code == 201
    # The change makes the stamps differ from what A applied, then the list read fails once.
    monkeypatch.setattr(federation, "_stamps", {"gone": "stale"})
    records = federation.records
    original = records.list
    failures = [1]

    async def failing(*args: Any, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise _Gone
        return await original(*args, **kwargs)

    monkeypatch.setattr(records, "list", failing)
    with pytest.raises(_Gone):
        await federation.load(if_version_moved=True)
    reads = count_stamp_reads(a, monkeypatch)
    await federation.load(if_version_moved=True)  # the version has not moved since
    assert reads[0] == 1
    assert federation._stamps != {"gone": "stale"}
