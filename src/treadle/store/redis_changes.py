"""Change fan-out over Redis pub/sub (`TREADLE_REDIS_URL`; see store/change_bus.py).

Published after the commit, so a replica that wakes on it reads the committed change. Redis
pub/sub delivers at most once: a process stopped between its commit and its publish, or a
subscriber that was disconnected, misses the event. The resync hub therefore still reads the
version row every `BACKSTOP_POLL_SECONDS`, and a resubscription after a lost connection
tells the listeners something may have changed meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Sequence

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncConnection

from treadle.store.change_bus import BACKSTOP_POLL_SECONDS
from treadle.store.change_events import CHANNEL, UNKNOWN, decode, encode
from treadle.store.database import ChangeEvent, Database

log = logging.getLogger(__name__)

REDIS_CHANNEL = f"treadle:{CHANNEL}"
PUBLISH_SECONDS = 2.0
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)


class RedisChanges:
    poll_seconds = BACKSTOP_POLL_SECONDS

    def __init__(self, db: Database, redis: Redis) -> None:
        self._db = db
        self._redis = redis
        self._origin = uuid.uuid4().hex
        # Set once `watch` has subscribed: events published from then on reach this process.
        self.subscribed = anyio.Event()

    async def within(self, conn: AsyncConnection, events: Sequence[ChangeEvent]) -> None:
        return None

    async def committed(self, events: Sequence[ChangeEvent]) -> None:
        # Shielded and bounded: the change is committed whatever happens to the caller, and
        # a slow or absent Redis delays it by at most PUBLISH_SECONDS (the backstop poll
        # still brings the change to the other replicas).
        with anyio.move_on_after(PUBLISH_SECONDS, shield=True):
            try:
                await self._redis.publish(REDIS_CHANNEL, encode(self._origin, events))
            except RedisError as error:
                log.warning("could not publish a configuration change (%s)", error)

    async def watch(self) -> None:
        for attempt in itertools.count():
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(REDIS_CHANNEL)
                    self.subscribed.set()
                    if attempt:
                        self._db.deliver(UNKNOWN)  # events published meanwhile are gone
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            for event in decode(self._origin, message["data"]):
                                self._db.deliver(event)
            except RedisError as error:
                log.warning("lost the Redis change subscription (%s); resubscribing", error)
            await anyio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])

    async def reachable(self) -> bool:
        """For /readyz: Redis answers a PING."""
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        return None  # the Redis client is the gateway's, closed with it
