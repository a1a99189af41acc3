"""Reading request bodies: a size cap, JSON objects only, typed models, documented errors."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from treadle.errors import ErrorCode, Refusal, ValidationFailed

MAX_BODY_BYTES = 1024 * 1024

Model = TypeVar("Model", bound=BaseModel)


class Body(BaseModel):
    """Base of request bodies: camelCase as in the documents, strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


async def read_json_object(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ValidationFailed("The request body must be a JSON object")
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValidationFailed("The request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValidationFailed("The request body must be a JSON object")
    return parsed


def _too_large() -> Refusal:
    return Refusal(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"The request body is larger than {MAX_BODY_BYTES} bytes",
        limit=MAX_BODY_BYTES,
    )


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_failed(exc) from None


async def read_body(request: Request, model: type[Model]) -> Model:
    return parse(model, await read_json_object(request))


def _validation_failed(exc: ValidationError) -> ValidationFailed:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    kind = first["type"]
    if kind == "missing":
        return ValidationFailed(f"Missing required field: {field}", field=field)
    if kind == "extra_forbidden":
        return ValidationFailed(f"Unknown field: {_short(field)}", field=_short(field))
    return ValidationFailed(f"Invalid value for field {_short(field)}: {first['msg']}", field=field)


def _short(text: str | None) -> str | None:
    return None if text is None else text[:100]
