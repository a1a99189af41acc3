"""What the activity log (and later the approval page) may show of an input."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from treadle.catalog.model import ToolContent

REDACTED = "[redacted]"

# Shorter connection values ("us", "1") would mangle text without protecting anything.
MIN_SECRET_LENGTH = 4

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


# Connection values that name rather than unlock (`catalog.credentials`): scrubbing a basic
# connection's username or an oauth2 expiry from every answer would mangle real data (a
# GitHub `login`, a timestamp) and protect nothing.
_NOT_SECRET = frozenset({"username", "expiresAt"})


def secret_values(values: Mapping[str, str]) -> tuple[str, ...]:
    """A connection's values to scrub from what leaves the pipeline, longest first.

    Besides each value as stored, the form it takes on the wire when an upstream echoes the
    request back: a basic connection's `Authorization: Basic` credentials.
    """
    found = {
        value
        for key, value in values.items()
        if key not in _NOT_SECRET and len(value) >= MIN_SECRET_LENGTH
    }
    username, password = values.get("username"), values.get("password")
    if username is not None and password:
        found.add(base64.b64encode(f"{username}:{password}".encode()).decode())
    return tuple(sorted(found, key=len, reverse=True))


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """`value` with every occurrence of a secret replaced, in strings at any depth (object
    keys included).

    For what an action reports back, success or not (outputs, errors, third-party details,
    crash logs): those may quote the credentials the action was given, e.g. "Incorrect API
    key provided: sk-..." or an echo of the request's headers.
    """
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, ToolContent):
        # Still content blocks once scrubbed (not a plain object rendered as JSON text).
        cleaned = scrub(dict(value), secrets)
        return ToolContent.from_wire(cleaned["content"], cleaned.get("structured"))
    if isinstance(value, dict):
        return {scrub(key, secrets): scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, secrets) for item in value]
    return value
