"""Validates merged input against an action's JSON Schema, naming the offending field.

The action's schema is the whole rule, whatever the face: a key it does not declare is
accepted unless the schema says otherwise (`additionalProperties`, `patternProperties`), and
an MCP tool advertises that same rule (minus enforced keys), never a stricter one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from treadle.errors import ValidationFailed

# Where jsonschema-rs and jsonschema could disagree, or where it could fetch: text rules (its
# regexes are ECMA's, its format checks differ) and references outside the schema itself
# (action schemas may come from an upstream MCP server; nothing is fetched for them).
_NOT_QUICK = frozenset({"pattern", "patternProperties", "format", "$schema", "$id", "$anchor"})
# Compiled schemas, most recently used last. Action schemas are long-lived objects, but an
# upstream's catalog brings new ones at each refresh: the oldest are let go past this many.
MAX_COMPILED = 4096


class _Compiled:
    """One schema compiled by jsonschema (lazily: only refusals need it) and, where that is
    safe, by jsonschema-rs, which passes valid input in ~1 µs against jsonschema's ~50 µs
    for a small schema, on every call of every face. Holding the schema keeps its id from
    going to another dict while the entry lives."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.quick: jsonschema_rs.Validator | None = None
        if _quick_safe(schema):
            try:
                self.quick = jsonschema_rs.Draft202012Validator(schema)
            except (jsonschema_rs.ValidationError, ValueError):
                self.quick = None
        self._full: Validator | None = None

    @property
    def full(self) -> Validator:
        if self._full is None:
            self._full = Draft202012Validator(
                self.schema, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
        return self._full


_compiled: OrderedDict[int, _Compiled] = OrderedDict()


def _quick_safe(node: Any) -> bool:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _NOT_QUICK:
                return False
            if key in ("$ref", "$dynamicRef") and not (
                isinstance(value, str) and value.startswith("#")
            ):
                return False
            if not _quick_safe(value):
                return False
    elif isinstance(node, list):
        return all(_quick_safe(item) for item in node)
    return True


def _compiled_for(schema: dict[str, Any]) -> _Compiled:
    found = _compiled.get(id(schema))
    if found is None or found.schema is not schema:
        found = _compiled[id(schema)] = _Compiled(schema)
        if len(_compiled) > MAX_COMPILED:
            _compiled.popitem(last=False)
    else:
        _compiled.move_to_end(id(schema))
    return found


def _field(error: ValidationError) -> str | None:
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            return f"{path}.{missing[0]}" if path else str(missing[0])
    return path or None


def validate_input(schema: dict[str, Any], value: dict[str, Any]) -> None:
    # Same draft, no text rules, no outside references: both libraries accept the same input,
    # so a pass is final. A refusal is decided, and worded, by jsonschema alone.
    compiled = _compiled_for(schema)
    if compiled.quick is not None and compiled.quick.is_valid(value):
        return
    errors = sorted(compiled.full.iter_errors(value), key=lambda e: list(e.absolute_path))
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
