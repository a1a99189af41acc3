"""A partial's form, generated from an action's input schema, and the values read back from it.

Each input of the schema gets a field suited to its type (text, number, yes/no, a choice of its
enum, else JSON) and an "enforce" check-box; what the schema does not name goes in one JSON
object. Reading a field only turns text into the JSON value it stands for: whether the values
fit the action is the engine's check (`check_values`), the same as for REST.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from treadle.catalog.model import Action

Kind = Literal["text", "integer", "number", "boolean", "choice", "json"]
EXTRA = "extra"


@dataclass(frozen=True, slots=True)
class ValueField:
    key: str
    kind: Kind
    description: str
    required: bool
    # For "choice": each option as the JSON text the form posts back.
    choices: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The posted field; `values.{key}` is also where the engine's refusals point."""
        return f"values.{self.key}"

    @property
    def html_id(self) -> str:
        return "value-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in self.key)

    def shown(self, value: Any) -> str:
        """The text a field shows for a stored value (missing: empty)."""
        if value is _MISSING:
            return ""
        if self.kind == "text" and isinstance(value, str):
            return value
        if self.kind == "json":
            return json.dumps(value, ensure_ascii=False)
        # Numbers, yes/no and choices: the JSON text their input or options hold.
        return json.dumps(value)


_MISSING: Any = object()


def _kind(schema: Mapping[str, Any]) -> Kind:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return "choice"
    kind = schema.get("type")
    if kind == "string":
        return "text"
    if kind in ("integer", "number", "boolean"):
        return "integer" if kind == "integer" else "number" if kind == "number" else "boolean"
    return "json"


def value_fields(actions: Iterable[Action]) -> list[ValueField]:
    """The fields for the inputs of `actions` (one action, or every action of an integration
    for an integration-wide partial), in schema order; an input several actions share comes
    once, as the first declares it."""
    fields: dict[str, ValueField] = {}
    for action in actions:
        schema = action.input_schema
        required = set(schema.get("required", []))
        for key, spec in schema.get("properties", {}).items():
            if key in fields or not isinstance(spec, dict):
                continue
            kind = _kind(spec)
            choices = tuple(json.dumps(c) for c in spec["enum"]) if kind == "choice" else ()
            fields[key] = ValueField(
                key=key,
                kind=kind,
                description=str(spec.get("description", "")),
                required=key in required,
                choices=choices,
            )
    return list(fields.values())


@dataclass(frozen=True, slots=True)
class ReadBack:
    """The values and enforced keys a posted form stands for, what each field showed (to show
    it again) and the fields whose text was no value of their kind."""

    values: dict[str, Any]
    enforced: list[str]
    shown: dict[str, str]
    errors: dict[str, str]


def _read(field: ValueField, text: str) -> Any:
    if field.kind == "text":
        return text
    if field.kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError("Choose yes or no.")
        return text == "true"
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(
            "Enter a number." if field.kind in ("integer", "number") else "Enter valid JSON."
        ) from None
    if field.kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError("Enter a whole number.")
    if field.kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("Enter a number.")
    return value


def read_values(
    fields: list[ValueField], posted: Mapping[str, list[str]], enforced: list[str]
) -> ReadBack:
    values: dict[str, Any] = {}
    shown: dict[str, str] = {}
    errors: dict[str, str] = {}
    for field in fields:
        text = (posted.get(field.name) or [""])[0]
        shown[field.name] = text
        if field.kind != "text":
            text = text.strip()
        if text == "":
            continue  # not preset
        try:
            values[field.key] = _read(field, text)
        except ValueError as bad:
            errors[field.name] = f"{bad} (VALIDATION_ERROR)"
    extra_text = (posted.get(EXTRA) or [""])[0].strip()
    shown[EXTRA] = extra_text
    if extra_text:
        try:
            extra = json.loads(extra_text)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            errors[EXTRA] = "Other values must be a JSON object. (VALIDATION_ERROR)"
        else:
            for key, value in extra.items():
                if key in values or any(f.key == key for f in fields):
                    errors[EXTRA] = f"Set '{key[:100]}' in its own field. (VALIDATION_ERROR)"
                    break
                values[key] = value
    return ReadBack(values, list(dict.fromkeys(enforced)), shown, errors)


def shown_values(fields: list[ValueField], values: Mapping[str, Any]) -> dict[str, str]:
    """What the form shows for stored `values`: each field's text, the rest as JSON."""
    shown = {f.name: f.shown(values.get(f.key, _MISSING)) for f in fields}
    keys = {f.key for f in fields}
    rest = {k: v for k, v in values.items() if k not in keys}
    shown[EXTRA] = json.dumps(rest, indent=2, ensure_ascii=False) if rest else ""
    return shown


def extra_keys(fields: list[ValueField], values: Mapping[str, Any]) -> list[str]:
    keys = {f.key for f in fields}
    return [k for k in values if k not in keys]
