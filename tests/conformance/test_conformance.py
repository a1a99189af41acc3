"""The official MCP conformance suite, both spec eras, against a real `treadle serve`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import run
from live import which_node_tool_missing

pytestmark = pytest.mark.timeout(600)


def test_conformance_suite_has_no_unexpected_results(tmp_path: Path) -> None:
    missing = which_node_tool_missing()
    if missing is not None:
        pytest.skip(missing)
    results = run.run_suite(tmp_path)
    expected = run.expected_failures()
    run.write_report(results, expected)
    assert {r.scenario for r in results} >= {
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-error",
        "tools-call-with-progress",
        "tools-call-with-logging",
        "tools-call-sampling",
        "tools-call-elicitation",
        "dns-rebinding-protection",
        "server-stateless",
        "caching",
        "http-header-validation",
    }
    assert run.unexpected(results, expected) == []
