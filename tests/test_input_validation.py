"""Input validation: jsonschema-rs passes valid input quickly, jsonschema decides the rest, and
the two never disagree about what is accepted."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from treadle.engine import validation
from treadle.engine.validation import validate_input
from treadle.errors import ValidationFailed

OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 5},
        "count": {"type": "integer", "minimum": 0},
        "ratio": {"type": "number", "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "mode": {"enum": ["a", "b"]},
        "nested": {"$ref": "#/$defs/nested"},
        "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    },
    "required": ["text"],
    "additionalProperties": False,
    "$defs": {
        "nested": {
            "type": "object",
            "properties": {"flag": {"type": "boolean"}},
            "required": ["flag"],
        }
    },
}

INPUTS: list[dict[str, Any]] = [
    {"text": "hi"},
    {"text": "hi", "count": 3, "ratio": 0.5, "tags": ["x", "y"], "mode": "a"},
    {"text": "hi", "count": 2.0},  # an integer by JSON Schema's rule
    {"text": "hi", "nested": {"flag": True}, "either": 7},
    {},
    {"text": ""},
    {"text": "toolong"},
    {"text": "hi", "count": -1},
    {"text": "hi", "count": True},  # a boolean is not an integer
    {"text": "hi", "count": 1.5},
    {"text": "hi", "ratio": 1},
    {"text": "hi", "tags": ["x", "x"]},
    {"text": "hi", "mode": "c"},
    {"text": "hi", "nested": {}},
    {"text": "hi", "either": 1.5},
    {"text": "hi", "extra": 1},
]


def _jsonschema_alone(schema: dict[str, Any], value: dict[str, Any]) -> bool:
    checker = Draft202012Validator.FORMAT_CHECKER
    return Draft202012Validator(schema, format_checker=checker).is_valid(value)


def _accepted(schema: dict[str, Any], value: dict[str, Any]) -> str | None:
    """None when accepted, else the refused field (the caller-visible part of a refusal)."""
    try:
        validate_input(schema, value)
    except ValidationFailed as refused:
        return str(refused.extra.get("field") or "(input)")
    return None


@pytest.mark.parametrize("value", INPUTS, ids=range(len(INPUTS)))
def test_the_quick_path_accepts_exactly_what_jsonschema_accepts(value: dict[str, Any]) -> None:
    assert validation._compiled_for(OBJECT).quick is not None
    assert (_accepted(OBJECT, value) is None) == _jsonschema_alone(OBJECT, value)


def test_a_refusal_names_the_field_as_before() -> None:
    assert _accepted(OBJECT, {}) == "text"
    assert _accepted(OBJECT, {"text": "hi", "count": -1}) == "count"
    assert _accepted(OBJECT, {"text": "hi", "extra": 1}) == "extra"
    with pytest.raises(ValidationFailed) as refused:
        validate_input(OBJECT, {"text": "hi", "nested": {}})
    assert refused.value.code.value == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"s": {"type": "string", "pattern": r"^\s$"}}},
        {"type": "object", "properties": {"s": {"type": "string", "format": "regex"}}},
        {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
        {"type": "object", "properties": {"s": {"$ref": "https://example.invalid/s.json"}}},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {"$id": "https://example.invalid/root.json", "type": "object"},
    ],
    ids=["pattern", "format", "patternProperties", "remote-ref", "other-draft", "id"],
)
def test_schemas_where_the_two_could_differ_or_fetch_are_left_to_jsonschema(
    schema: dict[str, Any],
) -> None:
    assert validation._compiled_for(schema).quick is None


def test_an_ecma_only_whitespace_is_refused_as_jsonschema_refuses_it() -> None:
    # U+FEFF is whitespace to an ECMA regex, not to Python's: jsonschema's answer stands.
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": r"^\s$"}}}
    assert _accepted(schema, {"s": "\ufeff"}) == "s"
    assert _accepted(schema, {"s": " "}) is None


def test_compiled_schemas_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "MAX_COMPILED", 8)
    monkeypatch.setattr(validation, "_compiled", OrderedDict())
    schemas = [{"type": "object", "properties": {f"k{i}": {"type": "string"}}} for i in range(20)]
    for schema in schemas:
        validate_input(schema, {f"k{schemas.index(schema)}": "v"})
    assert len(validation._compiled) == 8
    # The newest are kept, and a schema let go compiles again when it is next used.
    assert _accepted(schemas[0], {"k0": 1}) == "k0"
