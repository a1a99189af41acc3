"""examples/*.py, each run as the documented script against a real `treadle serve` (loopback).

Each example's agent is driven by a scripted stand-in for an LLM that calls the `kv-store`
alias `notes`: `notes__put` then `notes__get`; the script prints the get's output as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from interop_stack import Gateway, gateway_fixture  # noqa: F401  (the fixture `gateway`)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.timeout(90)


def run_example(name: str, gateway: Gateway, key: str, value: object) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / f"{name}.py"),
            "--url",
            gateway.url,
            "--token",
            gateway.token,
            "--key",
            key,
            "--value",
            json.dumps(value),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


@pytest.mark.parametrize(
    ("name", "module"),
    [("pydantic_ai_agent", "pydantic_ai"), ("openai_agents_sdk", "agents")],
)
def test_example_puts_then_gets(gateway: Gateway, name: str, module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install -e '.[interop]'")
    value = {"example": name, "items": [1, "two", None]}
    got = run_example(name, gateway, f"example-{name}", value)
    assert got == {"key": f"example-{name}", "found": True, "value": value}


def test_langchain_mcp_adapters() -> None:
    pytest.skip(
        "langchain-mcp-adapters 0.3.2 (the newest release) requires mcp<2.0.0 and treadle pins "
        "mcp==2.3.0: pip cannot install both, so there is no LangChain example"
    )
