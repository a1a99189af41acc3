"""Signed-in browsers of the web console: one row per session, keyed by the cookie's hash.

The cookie holds a 256-bit secret that is never stored; a stolen database cannot sign anyone
in. A session belongs to the API key it was opened with: every request reads that key again,
so revoking or expiring the key ends its sessions at the next click. A session unused for
`idle_seconds` is over; `last_seen` is refreshed at most once a minute (a write per click
would be waste), and rows long idle are pruned as new sessions open.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from treadle.ids import hash_token
from treadle.store import schema
from treadle.store.database import Database

_TABLE = schema.console_sessions
TOUCH_EVERY_MS = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    token: str
    org_id: str
    api_key_id: str


class ConsoleSessions:
    def __init__(self, db: Database, idle_seconds: int = 30 * 60) -> None:
        self._db = db
        self.idle_seconds = idle_seconds

    async def open(self, org_id: str, api_key_id: str) -> ConsoleSession:
        token = secrets.token_urlsafe(32)
        now = now_ms()
        async with self._db.write("console") as txn:
            await txn.conn.execute(
                _TABLE.delete().where(_TABLE.c.last_seen < now - self.idle_seconds * 1000)
            )
            await txn.conn.execute(
                _TABLE.insert().values(
                    session_hash=hash_token(token),
                    org_id=org_id,
                    api_key_id=api_key_id,
                    created_at=now,
                    last_seen=now,
                )
            )
        return ConsoleSession(token, org_id, api_key_id)

    async def find(self, token: str) -> ConsoleSession | None:
        """The live session of `token`, its idle clock restarted; None when unknown or idle
        too long (an idle one is deleted)."""
        key = hash_token(token)
        async with self._db.read() as conn:
            row = (await conn.execute(_TABLE.select().where(_TABLE.c.session_hash == key))).first()
        if row is None:
            return None
        now = now_ms()
        if now - int(row.last_seen) >= self.idle_seconds * 1000:
            await self.close(token)
            return None
        if now - int(row.last_seen) >= TOUCH_EVERY_MS:
            async with self._db.write("console") as txn:
                await txn.conn.execute(
                    _TABLE.update().where(_TABLE.c.session_hash == key).values(last_seen=now)
                )
        return ConsoleSession(token, row.org_id, row.api_key_id)

    async def close(self, token: str) -> None:
        async with self._db.write("console") as txn:
            await txn.conn.execute(
                _TABLE.delete().where(_TABLE.c.session_hash == hash_token(token))
            )

    async def count(self) -> int:
        async with self._db.read() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(_TABLE))).scalar_one()
            )
