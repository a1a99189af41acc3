"""Approval webhooks: POSTed in the background, signed, retried with backoff.

The body is signed like Stripe's: header `X-Treadle-Signature: t=<unix>,v1=<hex>` where
`v1 = HMAC-SHA256(policy webhook secret, "<t>.<raw body>")`. Deliveries never block a
caller: they queue here and a worker task (started by the host: `treadle serve`, `treadle
stdio`) sends them. Bodies carry the redacted input preview only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
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
    ) -> None:
        self._http = http
        self._backoff = backoff_seconds
        # Webhook URLs go through the same outbound guard as integrations; an operator whose
        # receiver sits on a private network opts in (TREADLE_WEBHOOKS_ALLOW_PRIVATE=1).
        self._allow_private = allow_private_network
        self._send, self._receive = anyio.create_memory_object_stream[Delivery](QUEUE_SIZE)
        self.delivered: list[tuple[str, int]] = []  # (event, status) for observability

    def notify(self, url: str | None, secret: str | None, event: str, data: dict[str, Any]) -> None:
        if not url or not secret:
            return
        try:
            self._send.send_nowait(Delivery(url, secret, event, data))
        except anyio.WouldBlock:
            log.error("webhook queue full; dropping %s for %s", event, url)

    async def run(self) -> None:
        """Deliver queued webhooks until cancelled (one delivery at a time, in order)."""
        async with anyio.create_task_group() as tg:
            async for delivery in self._receive:
                tg.start_soon(self._deliver, delivery)

    async def _deliver(self, delivery: Delivery) -> None:
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
                    self.delivered.append((delivery.event, status))
                    return
            if attempt < MAX_ATTEMPTS:
                await anyio.sleep(delay)
                delay *= 2
        self.delivered.append((delivery.event, status))
        log.error("webhook %s gave up after %d attempts", delivery.event, MAX_ATTEMPTS)
