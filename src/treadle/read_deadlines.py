"""Deadlines for slow clients: uvicorn's h11 protocol, closing a connection whose request
headers, or whose request body, take longer than allowed to arrive.

uvicorn bounds only the idle time between two requests (keep-alive). A client that sends a
header line a minute, a body a byte at a time, or nothing at all after connecting would hold
its connection (and, once its headers are in, a task) for as long as it likes.

Each deadline covers a whole phase, not the gap between two reads: trickling bytes does not
extend it. Headers are timed from the connection's opening, or from the first byte of the
next request on a kept-alive connection; the body from the end of the headers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("treadle.http")

Phase = Literal["headers", "body"]


@dataclass(frozen=True, slots=True)
class ReadDeadlines:
    headers: float
    body: float


class DeadlineProtocol(H11Protocol):
    """Configured through `deadline_protocol`: uvicorn builds protocols from a class."""

    deadlines: ClassVar[ReadDeadlines]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()  # the next, pipelined request may already be partly in

    def connection_lost(self, exc: Exception | None) -> None:
        self._start(None)
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Time the phase the client is in; a phase keeps its first deadline until it ends."""
        phase: Phase | None = None
        if self.transport.is_closing():
            phase = None
        elif self.conn.their_state is h11.SEND_BODY:
            phase = "body"
        elif self.conn.their_state is h11.IDLE and (
            # A fresh connection, or bytes of a next request (idle is keep-alive's business).
            self.cycle is None or self.conn.trailing_data[0]
        ):
            phase = "headers"
        if phase != self._phase:
            self._start(phase)

    def _start(self, phase: Phase | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = phase
        if phase is not None:
            seconds = self.deadlines.headers if phase == "headers" else self.deadlines.body
            self._timer = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _expired(self, phase: Phase, seconds: float) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        # Nothing is answered: a client this slow is gone or hostile. A request already
        # running sees a disconnect (and the access log records one).
        log.info("connection closed: request %s incomplete after %gs", phase, seconds)
        self.transport.close()


def deadline_protocol(*, headers: float, body: float) -> type[DeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`), with these deadlines in seconds."""

    class Configured(DeadlineProtocol):
        deadlines = ReadDeadlines(headers=headers, body=body)

    return Configured
