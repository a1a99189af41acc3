"""The one rule for end-user ids (an end user's `externalId`), whichever face names them.

An id names the same person over REST (a JSON string), MCP over HTTP (the
`X-Treadle-End-User` header), `treadle stdio --end-user` and a server record pinned to an end
user. An HTTP header cannot carry leading or trailing whitespace faithfully (servers trim it)
and must not carry control characters, so ids that hold either are refused everywhere, and an
id longer than the limit is refused, never cut: otherwise `"alice "` or a 256-character id would
arrive as another end user's id on one face and stay distinct on another.
"""

from __future__ import annotations

import unicodedata

from treadle.errors import ValidationFailed

MAX_LENGTH = 255


def end_user_id_problem(value: str) -> str | None:
    """Why `value` is not a valid end-user id, or None when it is one.

    The reason never quotes the value: ids reach logs and migration reports through it.
    """
    if not value:
        return "must not be empty"
    if len(value) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if value[0].isspace() or value[-1].isspace():
        return "must not start or end with whitespace"
    # Cc: C0 and C1 controls and DEL; line and paragraph separators break header lines too.
    if any(unicodedata.category(char) in {"Cc", "Zl", "Zp"} for char in value):
        return "must not contain control characters"
    return None


def check_end_user_id(value: str | None, *, field: str = "endUserId") -> str | None:
    """`value` unchanged when it is a valid end-user id (or None); VALIDATION_ERROR otherwise."""
    if value is None:
        return None
    problem = end_user_id_problem(value)
    if problem is not None:
        raise ValidationFailed(f"{field} {problem}", field=field)
    return value
