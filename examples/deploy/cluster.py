"""Three `treadle serve` replicas on one PostgreSQL database behind nginx round-robin.

    python examples/deploy/cluster.py [--replicas 3] [--database-url postgresql://…]
                                      [--redis-url redis://…] [--port 8400]

The layout of docs/deploy.md, on one machine: a shared secret key, `treadle migrate` once as
its own step, `treadle init` once, then the replicas (`treadle serve --no-migrate`, each on
its own loopback port and data dir) and Debian's nginx (`apt-get install nginx`) in front of
them, unprivileged, every path of it under one temporary directory. It prints the balancer's
URL, the API key, and the demo MCP server's URL and token, then serves until Ctrl+C.

Without --database-url (or TREADLE_DATABASE_URL) it creates a fresh database on the local
server (postgresql://postgres@127.0.0.1:5432) and drops it on exit. The test suite
(tests/multi_replica/) starts its clusters with this module too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NGINX_TEMPLATE = HERE / "nginx.conf"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432"
START_DEADLINE = 60.0  # seconds for every process to be ready


class ClusterError(RuntimeError):
    """A part of the cluster did not start; the message carries what it said."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return found


def treadle_command() -> list[str]:
    return [sys.executable, "-m", "treadle"]


@dataclass
class Process:
    """A child process whose stderr lines are collected by a thread; waiting for a line is
    waiting on a queue with a deadline, never on a timer."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _arrived: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, name: str, command: Sequence[str], env: Mapping[str, str]) -> Process:
        popen = subprocess.Popen(  # noqa: S603 (our own commands: treadle, nginx)
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = cls(name, popen)
        threading.Thread(target=started._read, daemon=True, name=f"stderr {name}").start()
        return started

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            self._arrived.put(line)
        self._arrived.put(None)

    def wait_until_serving(self, url: str, api_key: str, deadline: float) -> None:
        """Until `url` answers an authenticated read (the replica serves HTTP and reaches the
        database). Between attempts it waits for the process to say something, at most 50 ms,
        and stops at once if the process exits."""
        probe = urllib.request.Request(  # noqa: S310 (the replica's own http:// URL)
            f"{url}/api/v1/workspaces", headers={"Authorization": f"Bearer {api_key}"}
        )
        while True:
            try:
                with urllib.request.urlopen(probe, timeout=5) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except urllib.error.HTTPError as refused:
                raise ClusterError(f"{self.name} answered {refused.code}:\n{self.output}") from None
            except OSError:
                pass  # not listening yet
            if self.popen.poll() is not None:
                self._drained()
                raise ClusterError(f"{self.name} exited ({self.popen.poll()}):\n{self.output}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name} not ready in time:\n{self.output}")
            with contextlib.suppress(queue.Empty):
                self._arrived.get(timeout=0.05)

    def _drained(self) -> None:
        """Wait (briefly) for the reader thread to collect what an exited process wrote."""
        try:
            while self._arrived.get(timeout=2) is not None:
                pass
        except queue.Empty:
            pass

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


@dataclass
class Replica:
    process: Process
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Started replicas and the balancer; `stop()` ends them all (and drops a database it
    created)."""

    workdir: Path
    env: dict[str, str]  # what every treadle process of the cluster runs with
    admin_dir: Path  # the data dir `treadle init` ran in (holds the first API key)
    api_key: str
    org_id: str
    workspace_id: str
    replicas: list[Replica]
    nginx: Process | None
    port: int
    created_database: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def treadle(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one `treadle` command on the cluster's database (as an operator would)."""
        env = {**self.env, "TREADLE_DATA_DIR": str(self.admin_dir)}
        return subprocess.run(  # noqa: S603 (the treadle CLI)
            [*treadle_command(), *args], env=env, capture_output=True, text=True, timeout=60
        )

    def stop(self) -> None:
        processes = [r.process for r in self.replicas] + ([self.nginx] if self.nginx else [])
        for process in processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in processes:
            process.stop()
        if self.created_database is not None:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.created_database}" WITH (FORCE)'))
            self.created_database = None


def start(
    *,
    workdir: Path,
    replicas: int = 3,
    database_url: str | None = None,
    redis_url: str | None = None,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Cluster:
    """Bring the cluster up in `workdir`; on any failure, stop what started and raise
    ClusterError with the failing process's output."""
    nginx = nginx_binary()
    if nginx is None:
        raise ClusterError("nginx is not installed (Debian: apt-get install nginx)")
    created = None
    if database_url is None:
        created = f"treadle_cluster_{uuid.uuid4().hex[:16]}"
        asyncio.run(_admin(f'CREATE DATABASE "{created}"'))
        database_url = f"{LOCAL_SERVER}/{created}"
    balancer_port = port or free_port()
    public_url = f"http://127.0.0.1:{balancer_port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TREADLE_")}
    env.update(
        {
            "TREADLE_DATABASE_URL": database_url,
            # One key for every replica: connection secrets, approval links and MCP sessions
            # sealed by one replica must open on the others.
            "TREADLE_SECRET_KEY": secrets.token_urlsafe(48),
            # Links handed to people point at the balancer, not at a replica.
            "TREADLE_PUBLIC_URL": public_url,
        }
    )
    if redis_url:
        env["TREADLE_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    admin_dir = workdir / "admin"
    cluster = Cluster(
        workdir, env, admin_dir, "", "", "", [], None, balancer_port, created_database=created
    )
    try:
        migrated = cluster.treadle("migrate")
        if migrated.returncode != 0:
            raise ClusterError(f"treadle migrate failed:\n{migrated.stderr}")
        initialised = cluster.treadle("init", "--json")
        if initialised.returncode != 0:
            raise ClusterError(f"treadle init failed:\n{initialised.stderr}")
        shown = json.loads(initialised.stdout)
        cluster.api_key, cluster.org_id = shown["apiKey"], shown["orgId"]
        cluster.workspace_id = shown["workspaceId"]
        # All replicas start at once, then each is waited for against one deadline.
        deadline = time.monotonic() + START_DEADLINE
        for index in range(replicas):
            replica_port = free_port()
            data_dir = workdir / f"replica-{index + 1}"
            command = [*treadle_command(), "serve", "--no-migrate", "--port", str(replica_port)]
            process = Process.start(
                f"replica {index + 1}", command, {**env, "TREADLE_DATA_DIR": str(data_dir)}
            )
            cluster.replicas.append(Replica(process, replica_port, data_dir))
        for replica in cluster.replicas:
            replica.process.wait_until_serving(replica.url, cluster.api_key, deadline)
        cluster.nginx = _start_nginx(nginx, workdir / "nginx", cluster, deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_nginx(binary: str, prefix: Path, cluster: Cluster, deadline: float) -> Process:
    prefix.mkdir(parents=True, exist_ok=True)
    upstreams = "\n".join(f"        server 127.0.0.1:{r.port};" for r in cluster.replicas)
    config = (
        NGINX_TEMPLATE.read_text()
        .replace("{prefix}", str(prefix))
        .replace("{upstreams}", upstreams)
        .replace("{listen}", f"127.0.0.1:{cluster.port}")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    command = [binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
    checked = subprocess.run(  # noqa: S603 (nginx -t on the config we wrote)
        [*command, "-t"], capture_output=True, text=True, timeout=30
    )
    if checked.returncode != 0:
        raise ClusterError(f"nginx -t refused the configuration:\n{checked.stderr}")
    process = Process.start("nginx", command, os.environ)
    # nginx says nothing when it is up: it is up once its port accepts a connection.
    while True:
        try:
            socket.create_connection(("127.0.0.1", cluster.port), timeout=1).close()
            return process
        except OSError:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                process.stop()
                log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
                raise ClusterError(f"nginx did not start:\n{process.output}{log}") from None
            time.sleep(0.01)


async def _admin(statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(f"{LOCAL_SERVER}/postgres")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _demo(env: Mapping[str, str], data_dir: Path) -> tuple[str, str]:
    """The demo workspace and MCP server of `treadle demo`: (its server id, its token)."""
    from treadle.app import Gateway
    from treadle.demo import ensure_demo
    from treadle.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        database_url=env["TREADLE_DATABASE_URL"],
        secret_key=env["TREADLE_SECRET_KEY"],
    )
    gateway = await Gateway.open(settings)
    try:
        demo = await ensure_demo(gateway.store, data_dir)
    finally:
        await gateway.close()
    return demo.server.id, demo.token


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("TREADLE_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("TREADLE_REDIS_URL"))
    parser.add_argument("--port", type=int, default=8400, help="the balancer's port")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="treadle-cluster-") as work:
        try:
            cluster = start(
                workdir=Path(work),
                replicas=args.replicas,
                database_url=args.database_url,
                redis_url=args.redis_url,
                port=args.port,
            )
        except ClusterError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        try:
            server_id, token = asyncio.run(_demo(cluster.env, cluster.admin_dir))
            print(f"balancer:         {cluster.url}   (nginx, round-robin)")
            for replica in cluster.replicas:
                print(f"  replica:        {replica.url}")
            print(f"API key:          {cluster.api_key}")
            print(f"workspace:        {cluster.workspace_id}")
            print(f"demo MCP server:  {cluster.url}/mcp/{server_id}")
            print(f"demo MCP token:   {token}")
            print("\nFor the README's curl flow:\n")
            print(f"export TREADLE_API_KEY={cluster.api_key}")
            print(f"export TREADLE_WORKSPACE_ID={cluster.workspace_id}")
            print(f"API={cluster.url}/api/v1")
            print("\nServing; press Ctrl+C to stop.", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                while not stop.wait(3600):
                    pass
            except KeyboardInterrupt:
                pass
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
