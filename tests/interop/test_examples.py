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

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# langchain-mcp-adapters' own virtualenv (it requires mcp<2; treadle pins mcp 2).
LANGCHAIN_PYTHON = ROOT / ".tools" / "langchain-venv" / "bin" / "python"

pytestmark = pytest.mark.timeout(90)


def run_example(
    name: str, gateway: Gateway, key: str, value: object, python: str = sys.executable
) -> dict[str, object]:
    done = subprocess.run(
        [
            python,
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


def test_langchain_mcp_adapters(gateway: Gateway) -> None:
    # langchain-mcp-adapters requires mcp<2 and treadle pins mcp==2.3.0, so it lives in its
    # own virtualenv (.ci/run creates it) and talks to the gateway over Streamable HTTP only.
    if not LANGCHAIN_PYTHON.exists():
        pytest.skip(
            f"{LANGCHAIN_PYTHON} is missing: create it as .ci/run does "
            "(python3 -m venv .tools/langchain-venv && pip install langchain-mcp-adapters …)"
        )
    name = "langchain_mcp_tools"
    value = {"example": name, "items": [1, "two", None]}
    got = run_example(name, gateway, f"example-{name}", value, python=str(LANGCHAIN_PYTHON))
    assert got == {"key": f"example-{name}", "found": True, "value": value}
