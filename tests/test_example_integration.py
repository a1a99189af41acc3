"""examples/integration-textkit, installed the way a user installs a plugin, then called.

The package is built and installed with pip from its directory into a directory of its own
(`--target`, `--no-index`, `--no-build-isolation`: no network, nothing added to the test
environment); a real `treadle serve` with that directory on its path finds it through the
`treadle.integrations` entry point, and its action answers over REST and over MCP. The
example's own tests run against the installed copy too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from test_mcp_http_access import client_of

from mcp_harness import ServeProcess, subprocess_env

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "integration-textkit"
TEXT = "the cat and the hat"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("textkit-site")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-build-isolation",
            "--no-deps",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert any(target.glob("treadle_textkit-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def served(
    installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ServeProcess, dict[str, str]]]:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PYTHONPATH", str(installed))
    init = subprocess.run(
        [sys.executable, "-m", "treadle", "init", "--json"],
        env=subprocess_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    serve = ServeProcess.start(data_dir)
    try:
        yield serve, json.loads(init.stdout)
    finally:
        serve.stop()
        print("".join(serve.lines))


def test_the_examples_own_tests_pass_against_the_installed_package(installed: Path) -> None:
    env = {**subprocess_env(installed), "PYTHONPATH": str(installed)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=env,
        cwd=installed,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


async def test_the_installed_integration_answers_over_rest_and_mcp(
    served: tuple[ServeProcess, dict[str, str]],
) -> None:
    serve, init = served
    headers = {"Authorization": f"Bearer {init['apiKey']}"}
    async with httpx2.AsyncClient(base_url=f"{serve.base_url}/api/v1", headers=headers) as rest:
        catalog = (await rest.get("/integrations")).json()["integrations"]
        textkit = next(i for i in catalog if i["name"] == "textkit")
        assert list(textkit["actions"]) == ["count_words"]

        made = await rest.post(
            f"/workspaces/{init['workspaceId']}/integrations",
            json={"integrationName": "textkit", "connectionStrategy": "fixed"},
        )
        assert made.status_code == 201, made.text
        call = {
            "workspaceId": init["workspaceId"],
            "integrationName": "textkit",
            "actionName": "count_words",
            "input": {"text": TEXT, "top": 1},
        }
        ran = await rest.post("/actions/execute", json=call)
        assert ran.status_code == 200, ran.text
        assert ran.json()["output"] == {
            "words": 5,
            "characters": len(TEXT),
            "mostFrequent": [{"word": "the", "count": 2}],
        }
        # The input schema is enforced before the action runs.
        refused = await rest.post("/actions/execute", json={**call, "input": {"top": 1}})
        assert refused.status_code == 400
        assert refused.json()["error"] == "VALIDATION_ERROR"

        server = await rest.post(
            "/mcp/servers", json={"workspaceId": init["workspaceId"], "name": "text"}
        )
        assert server.status_code == 201, server.text
    url = f"{serve.base_url}/mcp/{server.json()['server']['id']}"
    async with client_of(url, server.json()["token"], "legacy") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["textkit__count_words"].input_schema["required"] == ["text"]
        result = await client.call_tool("textkit__count_words", {"text": TEXT})
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["words"] == 5
