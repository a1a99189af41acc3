"""JSON responses and the one error shape: `{"error": CODE, "message": sentence, ...extra}`."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from treadle.errors import ErrorCode, Refusal
from treadle.observability.logs import note


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def ok(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSON:
    return JSON(content, status_code=status, headers=headers)


def error(
    code: ErrorCode,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSON:
    note(error=code.value)
    body: dict[str, Any] = {"error": code.value, "message": message}
    body.update(extra or {})
    return JSON(body, status_code=code.status, headers=headers)


def refusal(refused: Refusal) -> JSON:
    return error(refused.code, refused.message, refused.extra)
