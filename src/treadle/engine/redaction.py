"""What the activity log (and later the approval page) may show of an input."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|apikey|authorization|auth|cookie|"
    r"credential|private[-_]?key|signature|session)",
    re.IGNORECASE,
)


def redact(value: dict[str, Any], enforced_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Enforced values and anything whose key names a secret become `[redacted]`."""
    hidden = set(enforced_keys)
    return {
        key: REDACTED if key in hidden or _SECRET_NAME.search(key) else _walk(item)
        for key, item in value.items()
    }


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        return redact(value)
    if isinstance(value, list):
        return [_walk(item) for item in value]
    return value
