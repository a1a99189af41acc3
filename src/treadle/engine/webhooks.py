"""Approval webhooks: POSTed in the background, signed, retried with backoff.

The body is signed like Stripe's: header `X-Treadle-Signature: t=<unix>,v1=<hex>` where
`v1 = HMAC-SHA256(policy webhook secret, "<t>.<raw body>")`. Deliveries never block a
caller: they queue here and a worker task (started by the host: `treadle serve`, `treadle
stdio`) sends them. Bodies carry the redacted input preview only.

Memory stays bounded whatever the receivers do: at most `max_in_flight` deliveries are being
sent (or waiting to retry) at once, at most `queue_size` more wait behind them, and a
delivery that finds the queue full is dropped and logged. Nothing is kept once a delivery
ends; `on_outcome` lets a host (or a test) observe each final status as it happens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

from treadle.clock import now_iso
from treadle.net import allow_private_network

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Treadle-Signature"
MAX_ATTEMPTS = 5
QUEUE_SIZE = 1000
# A receiver that hangs holds a delivery for up to five attempts and their backoff; without a
# cap every queued delivery would become a task of its own and the queue would bound nothing.
MAX_IN_FLIGHT = 16

# Called with (event, final status) when a delivery ends: 2xx delivered, otherwise the status
# of the last attempt (0: it never got an answer).
OutcomeListener = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    secret: str
    event: str
    data: dict[str, Any]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class WebhookNotifier:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        backoff_seconds: float = 1.0,
        allow_private_network: bool = False,
        queue_size: int = QUEUE_SIZE,
        max_in_flight: int = MAX_IN_FLIGHT,
        on_outcome: OutcomeListener | None = None,
    ) -> None:
        self._http = http
        self._backoff = backoff_seconds
        # Webhook URLs go through the same outbound guard as integrations; an operator whose
        # receiver sits on a private network opts in (TREADLE_WEBHOOKS_ALLOW_PRIVATE=1).
        self._allow_private = allow_private_network
        self._send, self._receive = anyio.create_memory_object_stream[Delivery](queue_size)
        self._slots = anyio.Semaphore(max_in_flight)
        self._in_flight = 0
        self._on_outcome = on_outcome
        self.dropped = 0  # deliveries refused because the queue was full

    @property
    def queued(self) -> int:
        """Deliveries waiting for a free slot."""
        return self._send.statistics().current_buffer_used

    @property
    def in_flight(self) -> int:
        """Deliveries being sent or waiting to retry."""
        return self._in_flight

    def notify(self, url: str | None, secret: str | None, event: str, data: dict[str, Any]) -> None:
        if not url or not secret:
            return
        try:
            self._send.send_nowait(Delivery(url, secret, event, data))
        except anyio.WouldBlock:
            self.dropped += 1
            log.error("webhook queue full; dropping %s for %s", event, url)

    async def run(self) -> None:
        """Deliver queued webhooks until cancelled: started in order, up to `max_in_flight`
        at once (a slow receiver does not hold up the others' deliveries)."""
        async with anyio.create_task_group() as tg:
            while True:
                # A slot first: until one frees up, deliveries wait in the bounded queue.
                await self._slots.acquire()
                try:
                    delivery = await self._receive.receive()
                except BaseException:
                    self._slots.release()
                    raise
                tg.start_soon(self._deliver_in_slot, delivery)

    async def _deliver_in_slot(self, delivery: Delivery) -> None:
        self._in_flight += 1
        try:
            status = await self._deliver(delivery)
        finally:
            self._in_flight -= 1
            self._slots.release()
        if self._on_outcome is not None:
            self._on_outcome(delivery.event, status)

    async def _deliver(self, delivery: Delivery) -> int:
        """Send with retries; the final status."""
        body = json.dumps(
            {"type": delivery.event, "createdAt": now_iso(), "data": delivery.data},
            separators=(",", ":"),
        ).encode()
        delay = self._backoff
        for attempt in range(1, MAX_ATTEMPTS + 1):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(delivery.secret, timestamp, body),
            }
            try:
                with allow_private_network(self._allow_private):
                    response = await self._http.post(delivery.url, content=body, headers=headers)
            except Exception as failure:  # any transport failure is retried the same way
                status = 0
                log.warning("webhook %s attempt %d failed: %s", delivery.event, attempt, failure)
            else:
                status = response.status_code
                if status < 300:
                    return status
            if attempt < MAX_ATTEMPTS:
                await anyio.sleep(delay)
                delay *= 2
        log.error("webhook %s gave up after %d attempts", delivery.event, MAX_ATTEMPTS)
        return status
