"""Query-string parameters shared by list endpoints: choices, bounded integers, timestamps."""

from __future__ import annotations

import re

from pydantic import BaseModel

from treadle.clock import iso, parse_iso
from treadle.errors import ValidationFailed

# ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")


def timestamp(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return iso(parse_iso(value))
    except ValueError:
        raise ValidationFailed(f"{name} must be an ISO 8601 timestamp", field=name) from None


def choice(value: str | None, name: str, allowed: set[str]) -> str | None:
    if value is not None and value not in allowed:
        raise ValidationFailed(f"{name} must be one of {', '.join(sorted(allowed))}", field=name)
    return value


def bounded_int(value: str | None, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not _WHOLE_NUMBER.fullmatch(value) or not low <= int(value) <= high:
        raise ValidationFailed(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(value)


class WorkspaceFilter(BaseModel):
    """The query of list endpoints filtered by workspace (an unknown one answers 404)."""

    workspaceId: str | None = None
