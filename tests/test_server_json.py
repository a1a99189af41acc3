"""`server.json` is a valid MCP registry entry that starts what the CLI really offers."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft7Validator

from treadle import __version__
from treadle.cli import build_parser

ROOT = Path(__file__).parent.parent
SCHEMA = Path(__file__).parent / "data" / "server.schema.json"  # registry schema 2025-12-11


def _server() -> dict[str, object]:
    loaded: dict[str, object] = json.loads((ROOT / "server.json").read_text())
    return loaded


def test_server_json_is_valid_against_the_registry_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(_server()), key=str)
    assert errors == []


def test_server_json_versions_match_the_package() -> None:
    server = _server()
    assert server["version"] == __version__
    packages = server["packages"]
    assert isinstance(packages, list)
    assert packages[0]["version"] == __version__


def test_server_json_arguments_are_accepted_by_the_cli() -> None:
    packages = _server()["packages"]
    assert isinstance(packages, list)
    argv: list[str] = []
    for argument in packages[0]["packageArguments"]:
        if argument["type"] == "positional":
            argv.append(argument["value"])
        else:
            argv += [argument["name"], "srv_example"]
    parsed = build_parser().parse_args(argv)
    assert parsed.command == "stdio"
    assert parsed.server == "srv_example"
