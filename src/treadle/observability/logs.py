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


@contextmanager
def written_in_background() -> Iterator[None]:
    """While a server runs: the root logger's handlers run on one writer thread, and the
    event loop only queues a record. A request's access line cost the loop ~30-200 µs of
    formatting and a blocking write to stderr (more when whoever reads stderr is slow).
    Lines keep their order; everything queued is written before this returns."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.handlers.QueueListener(records, *handlers)
    writer.start()
    root.handlers[:] = [_Handoff(records)]
    try:
        yield
    finally:
        root.handlers[:] = handlers
        writer.stop()  # writes what is queued, then ends the thread
