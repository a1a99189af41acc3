"""Packaging (marked `packaging`, about 20 s): `python -m build` makes a wheel and an sdist
that pass `twine check`, and the wheel, installed in a fresh virtualenv, runs as
`server.json`'s `uvx` entry would run it.

Hermetic: the build runs without isolation (the test environment's hatchling) and the wheel
is installed with `--no-index --no-deps`. The fresh venv reaches treadle's dependencies
through a `.pth` file naming a directory of links to the test environment's packages, with
treadle's own left out, so `treadle` there is the wheel's and nothing else.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import threading
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters

from databases import database_env
from mcp_harness import free_port

pytestmark = [pytest.mark.packaging, pytest.mark.anyio, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _dependencies_without_treadle(into: Path) -> Path:
    """Links to every package of the test environment except treadle (and its editable
    hook), for a fresh venv to import treadle's dependencies from."""
    into.mkdir()
    for packages in map(Path, site.getsitepackages()):
        for entry in packages.iterdir():
            name = entry.name.lower()
            if name.startswith(("treadle", "__editable__", "_treadle")) or entry.suffix == ".pth":
                continue
            link = into / entry.name
            if not link.exists():
                link.symlink_to(entry)
    return into


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = _dependencies_without_treadle(root / "deps")
    Path(purelib, "zz_test_dependencies.pth").write_text(f"{deps}\n")
    (wheel,) = dist.glob("*.whl")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return env_dir


def _env(data_dir: Path) -> dict[str, str]:
    # Only what server.json lists (and PATH): no PYTHONPATH reaching this source tree.
    return {"PATH": "/usr/bin:/bin", "TREADLE_DATA_DIR": str(data_dir), **database_env(data_dir)}


def test_the_installed_treadle_is_the_wheels(fresh_venv: Path) -> None:
    where = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", "import treadle; print(treadle.__file__)"],
        env=_env(Path("/nonexistent")),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(fresh_venv)), where


@pytest.fixture
def demo(fresh_venv: Path, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """`treadle demo` from the fresh venv: (its MCP URL, its token, its data dir)."""
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [str(fresh_venv / "bin" / "treadle"), "demo", "--port", str(free_port())],
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith("Serving"):
            break
    else:
        raise AssertionError("treadle demo exited:\n" + process.stderr.read())
    threading.Thread(target=process.stderr.read, daemon=True).start()
    threading.Thread(target=process.stdout.read, daemon=True).start()
    values = dict(
        line.strip().split(": ", 1) for line in printed if line.startswith("  ") and ": " in line
    )
    try:
        yield (
            values["MCP endpoint (streamable HTTP)"].strip(),
            values["Bearer token"].strip(),
            data_dir,
        )
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0


async def test_the_wheel_serves_the_demo_and_runs_as_server_json_says(
    fresh_venv: Path, demo: tuple[str, str, Path]
) -> None:
    url, token, data_dir = demo
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as http:
        answered = await http.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "packaging", "version": "1"},
                },
            },
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert answered.status_code == 200, answered.text

    # server.json's package entry: `uvx treadle <packageArguments>`, i.e. the package's
    # `treadle` console script with those arguments and environment variables.
    (package,) = json.loads((ROOT / "server.json").read_text())["packages"]
    assert (package["registryType"], package["identifier"], package["runtimeHint"]) == (
        "pypi",
        "treadle",
        "uvx",
    )
    server_id = url.rsplit("/", 1)[1]
    args: list[str] = []
    for argument in package["packageArguments"]:
        if argument["type"] == "positional":
            args.append(argument["value"])
        elif argument["name"] == "--server":
            args += ["--server", server_id]
    assert {v["name"] for v in package["environmentVariables"]} >= set(_env(data_dir)) - {"PATH"}
    params = StdioServerParameters(
        command=str(fresh_venv / "bin" / "treadle"), args=args, env=_env(data_dir)
    )
    async with Client(params) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
    assert "notes__put" in tools
