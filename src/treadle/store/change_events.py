"""Change events on the wire between processes (PostgreSQL NOTIFY, Redis pub/sub).

A message is small JSON: the sending process (so it can ignore its own, which its listeners
already heard) and the events. An event that cannot be read still wakes the listeners: a
message that went wrong must not hide a change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from treadle.store.database import ChangeEvent

log = logging.getLogger(__name__)

CHANNEL = "treadle_changes"

# Delivered when what changed is unknown: a message that could not be read, or a bus
# connection that was lost (events may have been missed meanwhile).
UNKNOWN = ChangeEvent("*", None, "configuration", "*", "unknown")


def encode(origin: str, events: Sequence[ChangeEvent]) -> str:
    return json.dumps({"o": origin, "e": [list(astuple(event)) for event in events]})


def decode(origin: str, message: str | bytes) -> list[ChangeEvent]:
    """The events of another process's message; none for this process's own."""
    try:
        body = json.loads(message)
        if body["o"] == origin:
            return []
        return [_event(fields) for fields in body["e"]]
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable change message; treating it as an unknown change")
        return [UNKNOWN]


def _event(fields: list[Any]) -> ChangeEvent:
    org_id, workspace_id, target_type, target_id, change = fields
    return ChangeEvent(
        str(org_id),
        None if workspace_id is None else str(workspace_id),
        str(target_type),
        str(target_id),
        str(change),
    )
