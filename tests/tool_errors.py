"""Reading an MCP error result the way a client may: from its text, or its structured content.

An error result's text is `CODE: sentence advice`, then, when the refusal has fields, a last
line `Details: {json}`. `structuredContent` repeats them as `{"error", "message", ...}` only
on tools without an `outputSchema` (README "How a client sees errors").
"""

from __future__ import annotations

import json
from typing import Any

from mcp.types import CallToolResult, TextContent

DETAILS = "\nDetails: "


def result_text(result: CallToolResult) -> str:
    assert result.content, result
    first = result.content[0]
    assert isinstance(first, TextContent), result
    return first.text


def refusal_fields(result: CallToolResult) -> dict[str, Any]:
    """`{"error": CODE, **fields}` of a refusal, read from the text; where the result also has
    structured content, it must say the same."""
    assert result.is_error, result
    text = result_text(result)
    code = text.split(":", 1)[0]
    _, found, tail = text.rpartition(DETAILS)
    details: dict[str, Any] = json.loads(tail) if found else {}
    fields = {"error": code, **details}
    if result.structured_content is not None:
        structured = dict(result.structured_content)
        structured.pop("message", None)
        assert structured == fields, (structured, fields)
    return fields
