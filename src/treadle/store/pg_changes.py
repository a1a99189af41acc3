"""Change fan-out over PostgreSQL `LISTEN/NOTIFY` (see store/change_bus.py).

Sending: `pg_notify` in the writing transaction. PostgreSQL delivers a notification only when
its transaction commits (never for one rolled back), after the commit is visible: a replica
that wakes on it and reads the version row sees the change.

Receiving: one asyncpg connection of this process's own, outside the pool, `LISTEN`ing; asyncpg
calls back on the event loop as notifications arrive, so there is no polling. When that
connection is lost, `watch` (run by `Gateway.run_background`) reconnects, and tells the
listeners that something may have changed meanwhile (events sent while nobody listened are
gone; the version row is not).
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from treadle.store.change_events import CHANNEL, UNKNOWN, decode, encode
from treadle.store.database import ChangeEvent, Database

log = logging.getLogger(__name__)

RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


class PostgresChanges:
    poll_seconds = math.inf

    def __init__(self, db: Database) -> None:
        self._db = db
        self._dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._origin = uuid.uuid4().hex
        self._conn: Any = None  # asyncpg.Connection (asyncpg ships no type hints)
        self._lost = anyio.Event()

    @classmethod
    async def open(cls, db: Database) -> PostgresChanges:
        changes = cls(db)
        await changes._listen()
        return changes

    async def within(self, conn: AsyncConnection, events: Sequence[ChangeEvent]) -> None:
        await conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": encode(self._origin, events)})

    async def committed(self, events: Sequence[ChangeEvent]) -> None:
        return None

    async def watch(self) -> None:
        while True:
            await self._lost.wait()
            for attempt in itertools.count():
                await anyio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
                try:
                    await self._listen()
                except Exception as error:  # OSError, or any of asyncpg's own
                    log.warning("could not listen for changes again (%s); retrying", error)
                else:
                    log.info("listening for configuration changes again")
                    self._db.deliver(UNKNOWN)
                    break

    async def reachable(self) -> bool:
        """For /readyz: the listening connection is up (a lost one is being reopened)."""
        return self._conn is not None and not self._conn.is_closed()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _listen(self) -> None:
        import asyncpg  # type: ignore[import-untyped]  # ships no type hints

        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_lost)
        self._conn = conn
        self._lost = anyio.Event()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for event in decode(self._origin, payload):
            self._db.deliver(event)

    def _on_lost(self, conn: Any) -> None:
        if conn is self._conn:  # not one `close` ended
            log.warning("the connection listening for configuration changes was lost")
            self._conn = None
            self._lost.set()
