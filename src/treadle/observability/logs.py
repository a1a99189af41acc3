"""Log output: the usual text lines, or `--log-format json` / TREADLE_LOG_FORMAT=json for one
JSON object per line (what log pipelines parse without a grok pattern).

The request line (treadle.access) carries the request's fields: `requestId`, method, route,
status, duration, and what the handlers noted on the way (`note`): the refusal `error` code,
the 401 `authReason` (missing, expired, invalid_token, wrong_server, unknown_server), for MCP
the JSON-RPC `rpcMethod` and `tool`. Never a token, header value or argument.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")

# The fields of the request being served (set by the HTTP middleware), None outside one.
_fields: ContextVar[dict[str, Any] | None] = ContextVar("treadle_request_fields", default=None)


def note(**fields: Any) -> None:
    """Add fields to the current request's log line (nothing outside a request)."""
    current = _fields.get()
    if current is not None:
        current.update(fields)


# The same fields, carried in the request's ASGI scope: a handshake-era MCP handler runs in
# its session's task, whose context was copied from the request that opened the session, so
# there `note` would write on that old request's line; `note_on` reaches the right one.
_SCOPE_KEY = "treadle.log_fields"


def carry(scope: MutableMapping[str, Any], fields: dict[str, Any]) -> None:
    scope[_SCOPE_KEY] = fields


def note_on(scope: Mapping[str, Any], **fields: Any) -> None:
    """Add fields to the log line of the request `scope` belongs to."""
    current = scope.get(_SCOPE_KEY)
    if isinstance(current, dict):
        current.update(fields)


def begin(fields: dict[str, Any]) -> Any:
    return _fields.set(fields)


def end(token: Any) -> None:
    _fields.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


class _Handoff(logging.handlers.QueueHandler):
    """Hands each record to the writer thread as it is: one process, so nothing needs
    pickling, and the formatter (asctime, JSON, a traceback) runs on that thread too."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure(level: int, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# How long a record may wait for the writer. The writer wakes once per batch instead of once
# per line: woken for each of a busy server's ~1,000 access lines a second, the GIL hand-offs
# to and from it cost the event loop as much CPU again as writing the lines did.
BATCH_SECONDS = 0.02
_STOP = object()


class _BatchWriter:
    """The writer thread: waits for a record, lets more gather for `BATCH_SECONDS`, then
    formats them all and writes them to each stream handler in one write."""

    def __init__(self, records: queue.SimpleQueue[Any], handlers: list[logging.Handler]) -> None:
        self._records = records
        self._handlers = handlers
        self._thread = threading.Thread(target=self._run, name="treadle-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Writes everything queued before this, then ends the thread."""
        self._records.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._records.get()
            if first is not _STOP:
                time.sleep(BATCH_SECONDS)
            batch: list[logging.LogRecord] = []
            stopping = first is _STOP
            if not stopping:
                batch.append(first)
            while not stopping:
                try:
                    found = self._records.get_nowait()
                except queue.Empty:
                    break
                if found is _STOP:
                    stopping = True
                else:
                    batch.append(found)
            for handler in self._handlers:
                _write(handler, batch)
            if stopping:
                return


def _write(handler: logging.Handler, batch: list[logging.LogRecord]) -> None:
    wanted = [r for r in batch if r.levelno >= handler.level and handler.filter(r)]
    if not wanted:
        return
    if not isinstance(handler, logging.StreamHandler):
        for record in wanted:
            handler.handle(record)
        return
    lines = []
    for record in wanted:
        try:
            lines.append(handler.format(record) + handler.terminator)
        except Exception:  # as StreamHandler.emit: a record that cannot be formatted
            handler.handleError(record)
    handler.acquire()
    try:
        handler.stream.write("".join(lines))
        handler.flush()
    except Exception:
        handler.handleError(wanted[-1])
    finally:
        handler.release()


@contextmanager
def written_in_background() -> Iterator[None]:
    """While a server runs: the root logger's handlers run on one writer thread, and the
    event loop only queues a record. A request's access line cost the loop ~30-200 µs of
    formatting and a blocking write to stderr (more when whoever reads stderr is slow).
    Lines keep their order; everything queued is written before this returns."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = _BatchWriter(records, handlers)
    writer.start()
    root.handlers[:] = [_Handoff(records)]
    try:
        yield
    finally:
        root.handlers[:] = handlers
        writer.stop()
