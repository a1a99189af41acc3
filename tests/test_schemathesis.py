"""Schemathesis against a real `treadle serve` (own data dir and database, ephemeral port):
every operation of /api/v1/openapi.json, the examples, coverage, fuzzing and stateful (links)
phases, bounded examples per operation, and zero failures of the four conformance checks.
The counts of a run are published in docs/openapi.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx2
import pytest

from mcp_harness import ServeProcess, subprocess_env

CHECKS = (
    "not_a_server_error,status_code_conformance,response_schema_conformance,"
    "content_type_conformance"
)
MAX_EXAMPLES = 5
SEED = 17


@pytest.mark.timeout(600)
def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    if shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None:
        pytest.fail('schemathesis is not installed (pip install -e ".[test]")')
    data_dir = tmp_path / "data"
    initialised = subprocess.run(
        [sys.executable, "-m", "treadle", "init", "--json"],
        env=subprocess_env(data_dir),
        check=True,
        capture_output=True,
        text=True,
    )
    api_key = json.loads(initialised.stdout)["apiKey"]
    served = ServeProcess.start(data_dir)
    try:
        document = httpx2.get(f"{served.base_url}/api/v1/openapi.json").json()
        operations = {
            f"{method.upper()} {path}"
            for path, methods in document["paths"].items()
            for method in methods
        }
        reports = tmp_path / "reports"
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{served.base_url}/api/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {api_key}",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--workers",
                "1",
                "--report",
                "junit",
                "--report-dir",
                str(reports),
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
            cwd=tmp_path,  # its .schemathesis/ cache stays out of the work tree
        )
    finally:
        served.stop()
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary
    # Our own run's report, not untrusted input.
    report = next(reports.glob("junit-*.xml"))
    suite = ET.parse(report).getroot().find("testsuite")  # noqa: S314
    assert suite is not None
    assert suite.get("failures") == "0", summary
    assert suite.get("errors") == "0", summary
    tested = {case.get("name") for case in suite.iter("testcase")}
    # Every operation but the document itself (schemathesis leaves out the operation that
    # serves its schema); the stateful phase reports as a case of its own.
    assert tested == operations - {"GET /api/v1/openapi.json"} | {"Stateful tests"}, summary
