"""A database that cannot be reached is 503 SERVICE_UNAVAILABLE with Retry-After, not a 500.

On PostgreSQL the gateway reaches its database through a TCP relay on loopback that the
test cuts (every connection reset, new ones refused) and then brings back on the same port:
a network partition or a server restart as a replica sees it. The classification itself is
checked against each driver's real exceptions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
import pytest
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from treadle.app import Gateway
from treadle.settings import Settings
from treadle.store.outage import DatabaseUnreachable, database_unavailable

from conftest import api_on
from databases import ON_POSTGRESQL

pytestmark = pytest.mark.anyio


def _wrapped(orig: BaseException) -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("unable to open database file"), True),
        (sqlite3.OperationalError("no such table: nope"), False),
        (_wrapped(sqlite3.OperationalError("database is locked")), True),
        (_wrapped(sqlite3.OperationalError("no such column: x")), False),
        (sqlalchemy.exc.TimeoutError("QueuePool limit reached"), True),
        (DatabaseUnreachable("ConnectionRefusedError"), True),
        # A socket error alone names no database: a provider's or identity provider's
        # address may have refused (their own codes say so where they are called).
        (ConnectionRefusedError(111, "Connection refused"), False),
        (ValueError("a defect"), False),
        (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("unique")), False),
    ],
)
def test_what_counts_as_an_unreachable_database(error: BaseException, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable


def test_asyncpgs_errors_are_told_apart_by_their_sqlstate() -> None:
    exceptions = pytest.importorskip("asyncpg.exceptions")
    assert database_unavailable(exceptions.TooManyConnectionsError("too many clients already"))
    assert database_unavailable(exceptions.CannotConnectNowError("the database system is starting"))
    assert database_unavailable(exceptions.AdminShutdownError("terminating connection"))
    assert database_unavailable(exceptions.ConnectionDoesNotExistError("closed mid-operation"))
    assert database_unavailable(exceptions.InterfaceError("connection is closed"))
    assert not database_unavailable(exceptions.UniqueViolationError("duplicate key"))
    assert not database_unavailable(exceptions.InterfaceError("another operation is in progress"))
    caused = RuntimeError("adapter")
    caused.__cause__ = exceptions.TooManyConnectionsError("too many clients already")
    assert database_unavailable(caused)


class Relay:
    """TCP on loopback to the PostgreSQL server; `cut` resets every connection and stops
    listening, `restore` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._open |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open:
            writer.transport.abort()
        self._open.clear()
        await self._server.wait_closed()

    restore = start


@asynccontextmanager
async def relayed(settings: Settings) -> AsyncIterator[tuple[Relay, Settings]]:
    url = make_url(settings.database_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    await relay.start()
    try:
        through = url.set(port=relay.port).render_as_string(hide_password=False)
        yield relay, replace(settings, database_url=through)
    finally:
        await relay.cut()


@pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="PostgreSQL only: SQLite has no server to lose (its locked file is classified above)",
)
async def test_rest_answers_503_while_the_database_is_gone_and_recovers_after(
    settings: Settings,
) -> None:
    async with relayed(settings) as (relay, through):
        gateway = await Gateway.open(through)
        try:
            async with api_on(gateway) as api:
                # Several connections of each kind in the pools, all to be lost in the cut.
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(api.get, "/workspaces")
                assert (await api.get("/workspaces")).status_code == 200
                await relay.cut()
                for path in ("/workspaces", f"/workspaces/{api.workspace_id}"):
                    gone = await api.get(path)
                    assert gone.status_code == 503, gone.text
                    assert gone.json()["error"] == "SERVICE_UNAVAILABLE"
                    assert gone.headers["retry-after"] == "1"
                    assert "127.0.0.1" not in gone.text
                made = await api.post("/workspaces", {"name": "while gone"})
                assert made.status_code == 503, made.text

                await relay.restore()
                # Connections the cut killed are not used again: the statements' stack drops
                # the ones asyncpg saw close, and SQLAlchemy's pool, having seen one fail,
                # replaces the rest. At most the first request after the restore may still
                # meet one of them.
                unavailable = 0
                with anyio.fail_after(30):
                    while (back := await api.get("/workspaces")).status_code == 503:
                        unavailable += 1
                        await anyio.lowlevel.checkpoint()
                assert back.status_code == 200, back.text
                assert unavailable <= 1
                names = [w["name"] for w in back.json()["workspaces"]]
                assert "while gone" not in names
        finally:
            await gateway.close()
