"""Validates merged input against an action's JSON Schema, naming the offending field.

The action's schema is the whole rule, whatever the face: a key it does not declare is
accepted unless the schema says otherwise (`additionalProperties`, `patternProperties`), and
an MCP tool advertises that same rule (minus enforced keys), never a stricter one.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from treadle.errors import ValidationFailed

_validators: dict[int, Validator] = {}


def _validator(schema: dict[str, Any]) -> Validator:
    # Action schemas are long-lived objects: compile each once. Keying by id is safe: the
    # validator holds its schema, so that id cannot go to another dict while the entry lives.
    found = _validators.get(id(schema))
    if found is None:
        found = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        _validators[id(schema)] = found
    return found


def _field(error: ValidationError) -> str | None:
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            return f"{path}.{missing[0]}" if path else str(missing[0])
    return path or None


def validate_input(schema: dict[str, Any], value: dict[str, Any]) -> None:
    errors = sorted(_validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    first = errors[0]
    name = _field(first)
    if first.validator == "required" and name:
        raise ValidationFailed(f"Missing required field: {name}", field=name)
    if first.validator == "additionalProperties" and isinstance(first.instance, dict):
        known = set(first.schema.get("properties", {}))
        extra = sorted(k for k in first.instance if k not in known)[0][:100]
        where = f"{name}.{extra}" if name else extra
        raise ValidationFailed(f"Unknown field: {where}", field=where)
    # jsonschema's message quotes the offending value; keep it short (it may be huge).
    where = f"Invalid value for field {name}" if name else "Invalid input"
    raise ValidationFailed(f"{where}: failed '{first.validator}' check", field=name)
