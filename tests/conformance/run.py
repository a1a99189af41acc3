"""Run the official MCP conformance suite against a real `treadle serve`; write docs/conformance.md.

    python tests/conformance/run.py            # exit 1 on an unexpected result

The suite (npm @modelcontextprotocol/conformance, pinned in .ci/run) runs under the Node 22 of
`.tools/`. It sends no credentials, so it talks to a loopback proxy that adds the MCP server's
bearer token. Fixture tools come from `fixture_integration.py`; prompts, resources and
completion from `fixture_upstream.py`, an upstream MCP server on loopback registered as the
workspace's integration `conformance-content`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from fixture_integration import tool_overrides  # noqa: E402
from fixture_upstream import TRIGGERS  # noqa: E402
from live import REPO, BearerProxy, ContentUpstream, Stack, node_env, npm_tool  # noqa: E402

SPEC_VERSIONS = ("2025-11-25", "2026-07-28")
# Scenarios outside the suite's "active" set that we run explicitly, per spec version.
EXTRA_SCENARIOS = {"2026-07-28": ("server-stateless", "caching", "http-header-validation")}
EXPECTED_FILE = HERE / "expected-failures.txt"
REPORT = REPO / "docs" / "conformance.md"
SUITE_VERSION = "0.2.0-alpha.12"
CONTENT_UPSTREAM = "conformance-content"
_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass(frozen=True)
class Result:
    scenario: str
    spec_version: str
    passed: int
    failed: int
    warnings: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.failed == 0


def expected_failures() -> dict[tuple[str, str], str]:
    expected: dict[tuple[str, str], str] = {}
    for raw in EXPECTED_FILE.read_text().splitlines():
        line, _, reason = raw.partition("#")
        if not line.strip():
            continue
        scenario, version = line.split()
        expected[(scenario, version)] = reason.strip()
    return expected


def _collect(out_dir: Path, version: str) -> list[Result]:
    results = []
    for checks_file in sorted(out_dir.glob("*/checks.json")):
        match = _DIR.match(checks_file.parent.name)
        if match is None:
            continue
        checks = json.loads(checks_file.read_text())
        failures = tuple(
            f"{c['id']}: {c.get('errorMessage', '')}".strip()
            for c in checks
            if c["status"] == "FAILURE"
        )
        results.append(
            Result(
                match["scenario"],
                version,
                sum(c["status"] == "SUCCESS" for c in checks),
                len(failures),
                sum(c["status"] == "WARNING" for c in checks),
                failures,
            )
        )
    return results


def run_suite(work: Path) -> list[Result]:
    content = ContentUpstream.start()
    stack = Stack.start(work / "data")
    try:
        stack.configure("conformance", "fx")
        # Prompts, resources and completion come from an upstream integration, offered
        # under the upstream's own names (the ones the suite asks for).
        stack.register_upstream(CONTENT_UPSTREAM, content.url)
        stack.configure(CONTENT_UPSTREAM, "content", settings={"contentNames": "upstream"})
        overrides = tool_overrides("fx") + [
            {"integrationAlias": "content", "actionName": t.name, "name": t.name} for t in TRIGGERS
        ]
        server_id, token = stack.create_server("conformance", toolOverrides=overrides)
        port = int(stack.base_url.rsplit(":", 1)[1])
        results: list[Result] = []
        with BearerProxy(port, token) as proxy:
            url = f"http://127.0.0.1:{proxy.port}/mcp/{server_id}"
            for version in SPEC_VERSIONS:
                runs: list[list[str]] = [[]]
                runs += [["--scenario", name] for name in EXTRA_SCENARIOS.get(version, ())]
                for index, extra in enumerate(runs):
                    out = work / f"{version}-{index}"
                    command = [str(npm_tool("conformance")), "server", "--url", url]
                    command += ["--spec-version", version, "-o", str(out), *extra]
                    subprocess.run(
                        command, env=node_env(), capture_output=True, text=True, timeout=600
                    )
                    results += _collect(out, version)
        return results
    finally:
        stack.stop()
        content.stop()


def write_report(results: list[Result], expected: dict[tuple[str, str], str]) -> None:
    """The doc depends on the results only, so a run with unchanged results rewrites it
    byte for byte and leaves the working tree clean."""
    lines = [
        "# MCP conformance",
        "",
        f"Last run of `@modelcontextprotocol/conformance@{SUITE_VERSION}` against a real "
        "`treadle serve`, written by `tests/conformance/run.py` "
        "(run by `python -m pytest`, see `tests/conformance/test_conformance.py`).",
        "Fixture tools: `tests/conformance/fixture_integration.py`, named exactly through the "
        "MCP server's `toolOverrides`. Prompts, resources and completion: "
        "`tests/conformance/fixture_upstream.py`, an upstream MCP server on loopback "
        "registered as an upstream integration whose settings keep its own names "
        '(`"contentNames": "upstream"`). Checks with a warning are not failures.',
        "",
        "| scenario | spec version | result | checks passed / failed / warnings |",
        "| --- | --- | --- | --- |",
    ]
    for r in sorted(results, key=lambda r: (r.spec_version, r.scenario)):
        key = (r.scenario, r.spec_version)
        if r.ok:
            verdict = "pass" if key not in expected else "pass (listed as expected failure!)"
        else:
            verdict = "expected failure" if key in expected else "**FAIL**"
        lines.append(
            f"| {r.scenario} | {r.spec_version} | {verdict} | {r.passed} / {r.failed} / "
            f"{r.warnings} |"
        )
    lines += ["", "## Expected failures", ""]
    for (scenario, version), reason in sorted(expected.items()):
        lines.append(f"- `{scenario}` ({version}): {reason}")
    if not expected:
        lines.append(f"None (`tests/conformance/{EXPECTED_FILE.name}` is empty).")
    failing = [r for r in results if not r.ok]
    if failing:
        lines += ["", "## Failed checks", ""]
        for r in failing:
            for failure in r.failures:
                lines.append(f"- `{r.scenario}` ({r.spec_version}) {failure[:300]}")
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")


def unexpected(results: list[Result], expected: dict[tuple[str, str], str]) -> list[str]:
    problems = []
    seen = {(r.scenario, r.spec_version) for r in results}
    for r in results:
        listed = (r.scenario, r.spec_version) in expected
        if not r.ok and not listed:
            problems.append(f"{r.scenario} {r.spec_version} failed: {'; '.join(r.failures)}")
        if r.ok and listed:
            problems.append(f"{r.scenario} {r.spec_version} passes: remove it from {EXPECTED_FILE}")
    problems += [f"{s} {v} is listed but did not run" for s, v in expected if (s, v) not in seen]
    return problems


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        results = run_suite(Path(work))
    expected = expected_failures()
    write_report(results, expected)
    print(f"conformance run took {time.monotonic() - started:.0f} s")
    problems = unexpected(results, expected)
    print("\n".join(problems) or f"{len(results)} scenarios as expected; see {REPORT}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
