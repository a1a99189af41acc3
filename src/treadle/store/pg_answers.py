"""Client answers handed between replicas over PostgreSQL `LISTEN/NOTIFY`.

A handshake-era client answers a request the server sent it mid-call (sampling, elicitation)
in a POST of its own, which a balancer without affinity may send to another replica than the
one whose call waits for it (`treadle.mcp.answer_relay`). That replica publishes the answer
here; every replica hears it, and the one holding the waiting request takes it.

A notification's payload is limited to 8000 bytes. An answer is sent as one or more parts
(ASCII JSON cut into `PART_CHARS` pieces), all in one transaction: PostgreSQL delivers a
transaction's notifications together and in order, so a listener reassembles them without
a table to clean up. Nothing is kept: an answer nobody waits for is dropped, as the SDK drops
one for a request it does not know.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa

from treadle.store.database import Database

log = logging.getLogger(__name__)

CHANNEL = "treadle_mcp_answers"
# Below the 8000-byte limit with room for the part's header (origin, id, index, count).
PART_CHARS = 7_600
# Answers being reassembled at once (more only if a connection dropped mid-answer).
_MAX_PARTIAL = 100
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


@dataclass(frozen=True, slots=True)
class RelayedAnswer:
    session_id: str
    protocol_version: str
    body: bytes


OnAnswer = Callable[[RelayedAnswer], None]


def _parts(origin: str, answer: RelayedAnswer) -> list[str]:
    text = json.dumps(
        {"s": answer.session_id, "v": answer.protocol_version, "b": answer.body.decode("utf-8")},
        ensure_ascii=True,  # one character, one byte: the cut respects the byte limit
    )
    pieces = [text[at : at + PART_CHARS] for at in range(0, len(text), PART_CHARS)] or [""]
    tag = uuid.uuid4().hex[:12]
    return [f"{origin}:{tag}:{index}:{len(pieces)}:{piece}" for index, piece in enumerate(pieces)]


class PostgresAnswers:
    """Publishes answers, and hands those other replicas publish to `on_answer`."""

    def __init__(self, db: Database, on_answer: OnAnswer) -> None:
        self._db = db
        self._on_answer = on_answer
        self._dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._origin = uuid.uuid4().hex[:12]
        self._conn: Any = None  # asyncpg.Connection (asyncpg ships no type hints)
        self._lost = anyio.Event()
        self._partial: OrderedDict[tuple[str, str], list[str]] = OrderedDict()

    async def publish(self, answer: RelayedAnswer) -> None:
        async with self._db.engine.begin() as conn:
            for part in _parts(self._origin, answer):
                await conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": part})

    async def run(self) -> None:
        """Listen until cancelled, reconnecting when the connection is lost."""
        await self._listen()
        try:
            while True:
                await self._lost.wait()
                for attempt in itertools.count():
                    await anyio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
                    try:
                        await self._listen()
                    except Exception as error:  # OSError, or any of asyncpg's own
                        log.warning("could not listen for MCP answers again (%s); retrying", error)
                    else:
                        break
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                # Dropped outright: a graceful close waits for the server, which at shutdown
                # (or while the database is being dropped) may never answer.
                conn.terminate()

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

    def _on_lost(self, conn: Any) -> None:
        if conn is self._conn:
            log.warning("the connection listening for MCP answers was lost")
            self._conn = None
            self._partial.clear()
            self._lost.set()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, tag, index_text, count_text, piece = payload.split(":", 4)
            index, count = int(index_text), int(count_text)
        except ValueError:
            log.warning("ignored a malformed MCP answer notification")
            return
        if origin == self._origin:
            return  # published by this replica, which did not hold the request
        key = (origin, tag)
        pieces = self._partial.pop(key, []) if index else []
        if len(pieces) != index:
            return  # a part went missing (a reconnection): the answer is lost
        pieces.append(piece)
        if len(pieces) < count:
            self._partial[key] = pieces
            while len(self._partial) > _MAX_PARTIAL:
                self._partial.popitem(last=False)
            return
        try:
            found = json.loads("".join(pieces))
            answer = RelayedAnswer(found["s"], found["v"], found["b"].encode("utf-8"))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored a malformed MCP answer")
            return
        self._on_answer(answer)
