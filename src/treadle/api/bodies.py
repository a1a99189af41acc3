"""Reading request bodies: one bounded reader, JSON objects only, typed models, clear errors."""

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


# Deeper than this, JSON is not a configuration or an input but an attack on the encoders,
# which recurse (and would fail with RecursionError when storing or answering).
MAX_DEPTH = 64


class BodyTooLarge(Refusal):
    """A body over its route's limit, refused as soon as the limit was passed."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The request body is larger than {limit} bytes",
            limit=limit,
        )


async def read_bounded(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, read by every route that reads one. Refused with BodyTooLarge as soon
    as its declared length or the bytes streamed so far pass `limit`: at most `limit` bytes
    (and one chunk) are ever held, chunked or not. The answer to a body left unread closes
    the connection (treadle.body_guard), so the rest is never read either."""
    if declared_length(request, limit) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object; with `optional`, no body at all stands for `{}`."""
    raw = await read_bounded(request)
    if optional and not raw:
        return {}
    if not raw.strip():
        raise ValidationFailed("The request body must be a JSON object")
    try:
        parsed = json.loads(raw, parse_constant=_refuse_constant)
    # ValueError covers JSONDecodeError, NaN/Infinity and integers too long to convert.
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValidationFailed("The request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValidationFailed("The request body must be a JSON object")
    _check_storable(parsed)
    return parsed


def declared_length(request: Request, limit: int) -> int:
    """The Content-Length a request declares, for refusing an oversized body before reading
    it: 0 when absent or garbage (the streamed size is checked anyway), over `limit` when it
    is a string of digits too long to be worth converting."""
    declared = request.headers.get("content-length", "")
    if not (declared.isascii() and declared.isdigit()):
        return 0
    return limit + 1 if len(declared) > 12 else int(declared)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_storable(document: dict[str, Any]) -> None:
    """Refuse what parses but could be neither stored nor sent back: lone surrogates (escaped
    `\\ud800` is valid JSON, but no UTF-8) and nesting deeper than MAX_DEPTH."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ValidationFailed(f"The request body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed("The request body contains text that is not valid Unicode") from None


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_failed(exc) from None


async def read_body(request: Request, model: type[Model]) -> Model:
    return parse(model, await read_json_object(request))


def _validation_failed(exc: ValidationError) -> ValidationFailed:
    errors = exc.errors(include_url=False, include_input=False)
    # Every missing field at once, before anything else: one attempt per field is no way to
    # learn a body. Shortened: a location can hold a caller's dictionary key of any length.
    missing = [_location(error["loc"]) for error in errors if error["type"] == "missing"][:20]
    if len(missing) > 1:
        names = ", ".join(str(name) for name in missing)
        return ValidationFailed(
            f"Missing required fields: {names}", field=missing[0], fields=missing
        )
    if missing:
        return ValidationFailed(f"Missing required field: {missing[0]}", field=missing[0])
    first = errors[0]
    field = _location(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        return ValidationFailed(f"Unknown field: {field}", field=field)
    return ValidationFailed(f"Invalid value for field {field}: {first['msg']}", field=field)


def _location(loc: tuple[int | str, ...]) -> str | None:
    return _short(".".join(str(part) for part in loc) or None)


def _short(text: str | None) -> str | None:
    return None if text is None else text[:100]
