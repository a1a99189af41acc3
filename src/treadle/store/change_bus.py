"""How committed configuration changes reach every process sharing the database.

A configuration write bumps the version row and queues a `ChangeEvent` in its transaction
(`WriteTxn.changed`); after the commit, this process's listeners (the MCP resync hub) hear it
at once. A `ChangeBus` carries the same events to the other processes, whose `Database`
hands them to its own listeners (`Database.deliver`):

- `LocalChanges` (SQLite, the embedded default): nothing to send; other processes on the
  file (`treadle stdio` beside `treadle serve`) notice by reading the version row, which is a
  microsecond read there, every `poll_seconds`.
- `PostgresChanges` (`store/pg_changes.py`): `NOTIFY` in the writing transaction itself, so
  the event goes out exactly when the change commits and never for one rolled back; every
  replica `LISTEN`s on a connection of its own. No polling.
- `RedisChanges` (`store/redis_changes.py`, with `TREADLE_REDIS_URL`): published after the
  commit, subscribed to by every replica.

Events are wake-up calls, not the data: a listener re-reads what it needs, and caches check
the version row on every request (`ConfigCache`), so a change is exact on the next request
to any replica whether or not its event has arrived yet. What the bus decides is how soon a
connected MCP client is told (tools/list_changed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from treadle.store.database import ChangeEvent

# How often processes without a bus read the version row to see other processes' commits.
LOCAL_POLL_SECONDS = 0.05
# A change whose event went missing (see RedisChanges) still arrives within this.
BACKSTOP_POLL_SECONDS = 5.0


class ChangeBus(Protocol):
    @property
    def poll_seconds(self) -> float:
        """How often the resync hub should still read the version row itself (inf: never)."""
        ...

    async def within(self, conn: AsyncConnection, events: Sequence[ChangeEvent]) -> None:
        """Called in the writing transaction, just before it commits."""

    async def committed(self, events: Sequence[ChangeEvent]) -> None:
        """Called after the commit."""

    async def watch(self) -> None:
        """Keep receiving other processes' events until cancelled (reconnecting as needed)."""

    async def close(self) -> None: ...


class LocalChanges:
    """No bus: this process's listeners hear its own commits; other processes poll."""

    poll_seconds = LOCAL_POLL_SECONDS

    async def within(self, conn: AsyncConnection, events: Sequence[ChangeEvent]) -> None:
        return None

    async def committed(self, events: Sequence[ChangeEvent]) -> None:
        return None

    async def watch(self) -> None:
        await anyio.sleep(math.inf)

    async def close(self) -> None:
        return None
