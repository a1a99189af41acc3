"""The servers under test, as real subprocesses: `treadle serve` and the bare SDK server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2

REPO = Path(__file__).resolve().parent.parent
EXTRA_INTEGRATIONS = "bench.integrations:integrations"
_ACCESS = re.compile(r"treadle\.access: (\w+) (\S+) (\d+) ([\d.]+)ms")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def child_env(data_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["TREADLE_EXTRA_INTEGRATIONS"] = EXTRA_INTEGRATIONS
    # The memory case holds 1,000 sessions of one token: the per-principal session limit
    # (250 by default) is an operator's setting, not what that case measures.
    env.setdefault("TREADLE_MCP_MAX_SESSIONS_PER_PRINCIPAL", "2000")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if data_dir is not None:
        env["TREADLE_DATA_DIR"] = str(data_dir)
    return env


def _serve(
    cli: list[str], env: dict[str, str], data_dir: Path, log_name: str
) -> tuple[int, subprocess.Popen[bytes], Path]:
    """`treadle serve` on a free port, logging to `data_dir/log_name`; returns once it
    listens."""
    port = free_port()
    log_path = data_dir / log_name
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*cli, "serve", "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while "Uvicorn running" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError("treadle serve did not start:\n" + log_path.read_text())
        time.sleep(0.05)
    return port, process, log_path


def rss_kib(pid: int) -> int:
    """Resident set size from /proc (kB as the kernel reports it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _wait_http(url: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            httpx2.get(url, timeout=1.0)
            return
        except httpx2.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not answer {url} within {seconds}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Treadle:
    """`treadle serve` on an ephemeral port with its own temporary data directory."""

    data_dir: Path
    process: subprocess.Popen[bytes]
    port: int
    org_id: str
    workspace_id: str
    api_key: str
    log_path: Path
    _log_offset: int = 0
    env: dict[str, str] = field(default_factory=dict)
    owns_data_dir: bool = True

    @classmethod
    def start(
        cls,
        patches: tuple[str, ...] = (),
        source: Path | None = None,
        database_url: str | None = None,
    ) -> Treadle:
        """`patches`: parts of the request path to switch off (`bench/patched.py`, for
        `python -m bench.ablate` only). `source`: a source tree (with `src/treadle`) to run
        instead of this one, e.g. an earlier commit's (`bench.ablate --against`).
        `database_url`: a database of its own (PostgreSQL) instead of the data dir's SQLite."""
        data_dir = Path(tempfile.mkdtemp(prefix="treadle-bench-"))
        env = child_env(data_dir)
        if database_url is not None:
            env["TREADLE_DATABASE_URL"] = database_url
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(source / "src"), env["PYTHONPATH"]])
        cli = [sys.executable, "-m", "treadle"]
        init = subprocess.run(
            [*cli, "init", "--json", "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        ids = json.loads(init.stdout)
        subprocess.run(
            [
                *cli,
                "org",
                "limits",
                "--rate-limit",
                "1000000",
                "--monthly-quota",
                "100000000",
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        serve_env = dict(env)
        if patches:
            cli = [sys.executable, "-m", "bench.patched"]
            serve_env["TREADLE_BENCH_PATCHES"] = ",".join(patches)
        port, process, log_path = _serve(cli, serve_env, data_dir, "serve.log")
        served = cls(
            data_dir, process, port, ids["orgId"], ids["workspaceId"], ids["apiKey"], log_path
        )
        served.env = serve_env
        return served

    def replica(self, number: int) -> Treadle:
        """Another `treadle serve` on the same data dir and database (its own port and log):
        a second replica of this deployment. Stopping it leaves the data dir."""
        port, process, log_path = _serve(
            [sys.executable, "-m", "treadle"], self.env, self.data_dir, f"serve-{number}.log"
        )
        return Treadle(
            self.data_dir,
            process,
            port,
            self.org_id,
            self.workspace_id,
            self.api_key,
            log_path,
            env=self.env,
            owns_data_dir=False,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mcp_url(self, server_id: str) -> str:
        return f"{self.base_url}/mcp/{server_id}"

    def rest(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=f"{self.base_url}/api/v1",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=httpx2.Timeout(60),
        )

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)

    def mark_log(self) -> None:
        self._log_offset = self.log_path.stat().st_size

    def access_since_mark(self, path_prefix: str = "/mcp/") -> list[dict[str, Any]]:
        """treadle.access lines written since `mark_log` (server-side time of each request)."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        found = []
        for match in _ACCESS.finditer(text):
            method, path, status, ms = match.groups()
            if path.startswith(path_prefix):
                found.append(
                    {"method": method, "path": path, "status": int(status), "ms": float(ms)}
                )
        return found

    def timer(self, path_prefix: str = "/mcp/") -> Callable[[], Awaitable[list[float]]]:
        """Server-side ms of the POSTs under `path_prefix` since the previous call."""

        async def read() -> list[float]:
            await anyio.sleep(0.15)  # access lines are written just after each response
            found = [a["ms"] for a in self.access_since_mark(path_prefix) if a["method"] == "POST"]
            self.mark_log()
            return found

        return read

    def errors_in_log(self) -> list[str]:
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if " ERROR " in line][:20]

    def stop(self) -> None:
        _stop(self.process)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Bare:
    """`bench/bare_server.py`: the bare SDK baseline."""

    process: subprocess.Popen[bytes]
    port: int
    aliases: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, aliases: int = 0) -> Bare:
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "bench" / "bare_server.py"),
                "--port",
                str(port),
                "--aliases",
                str(aliases),
            ],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bare = cls(process, port, aliases)
        try:
            _wait_http(f"{bare.base_url}/_bench/timings", process, 60)
        except BaseException:
            _stop(process)
            raise
        return bare

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)

    def timings(self) -> list[float]:
        found: list[float] = httpx2.get(f"{self.base_url}/_bench/timings", timeout=10).json()["ms"]
        return found

    async def timer(self) -> list[float]:
        """Server-side ms of the MCP and /rest/echo POSTs since the previous call."""
        async with httpx2.AsyncClient(timeout=10) as http:
            found: list[float] = (await http.get(f"{self.base_url}/_bench/timings")).json()["ms"]
        return found

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class StoreServer:
    """`bench/store_server.py`: a call's store work alone, served over HTTP."""

    process: subprocess.Popen[bytes]
    port: int
    database: str

    @classmethod
    def start(cls, database: str, url: str | None = None) -> StoreServer:
        port = free_port()
        command = [sys.executable, "-m", "bench.store_server", "--database", database]
        command += ["--port", str(port), *(["--url", url] if url else [])]
        process = subprocess.Popen(
            command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = cls(process, port, database)
        try:
            _wait_http(server.url, process, 60)
        except BaseException:
            _stop(process)
            raise
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        _stop(self.process)
