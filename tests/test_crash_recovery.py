"""`kill -9` under load, then a restart on the same data dir: nothing answered is lost or
doubled, and no idempotency key stays stuck.

A real `treadle serve` takes concurrent kv-store `put`s, each with its own idempotency key,
and is killed outright once enough of them have answered. Another `treadle serve` then
opens the same data dir. What the clients saw decides what must hold:
- every call that answered 200 is in the activity log once and counted in the quota, and
  retrying it replays the same answer without running again;
- every call that got no answer, retried with its key, answers 200 as the README says: a
  replay when it had finished, a run again (`Idempotent-Rerun: true`) when it had claimed
  the key, a first run when it never got that far; at most a 409 while the killed process's
  lease (shortened here to one second) runs out, never for good.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy as sa

from test_cli_serve import Output, environment, free_port, treadle_command, wait_for_port
from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.settings import Settings
from treadle.store.database import create_engine

from databases import database_url

pytestmark = pytest.mark.anyio

LEASE_SECONDS = 1
WORKERS = 16
ANSWERED_BEFORE_KILL = 40


@dataclass
class Server:
    process: anyio.abc.Process
    client: httpx2.AsyncClient


@asynccontextmanager
async def serving(data_dir: Path, api_key: str) -> AsyncIterator[Server]:
    port = free_port()
    output = Output()
    env = {**environment(data_dir), "TREADLE_IDEMPOTENCY_LEASE_SECONDS": str(LEASE_SECONDS)}
    async with anyio.create_task_group() as tasks:
        process = await anyio.open_process(
            [*treadle_command(), "serve", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        assert process.stderr is not None
        tasks.start_soon(output.pump, process.stderr)
        try:
            with anyio.fail_after(30):
                await wait_for_port(port, output)
            async with httpx2.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=30,
            ) as client:
                yield Server(process, client)
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    assert "Traceback" not in output.text, output.text


def put(workspace: str, n: int) -> dict[str, Any]:
    return {
        "workspaceId": workspace,
        "integrationName": "kv-store",
        "actionName": "put",
        "input": {"key": f"k{n}", "value": n},
        "idempotencyKey": f"crash-{n}",
    }


@dataclass
class Load:
    """What the clients of the killed server saw."""

    workspace: str
    answered: dict[int, httpx2.Response] = field(default_factory=dict)
    unanswered: set[int] = field(default_factory=set)
    enough: anyio.Event = field(default_factory=anyio.Event)
    stopped: bool = False
    sent: int = 0

    async def worker(self, client: httpx2.AsyncClient) -> None:
        while not self.stopped:
            n, self.sent = self.sent, self.sent + 1
            try:
                response = await client.post("/api/v1/actions/execute", json=put(self.workspace, n))
            except httpx2.TransportError:
                self.unanswered.add(n)  # killed before it answered (or before it was sent)
                continue
            assert response.status_code == 200, response.text
            self.answered[n] = response
            if len(self.answered) >= ANSWERED_BEFORE_KILL:
                self.enough.set()


async def executions(client: httpx2.AsyncClient) -> Counter[int]:
    """How many execution records each `put` number has, through the activity API."""
    seen: Counter[int] = Counter()
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"type": "action_execution", "limit": 200}
        if cursor is not None:
            params["cursor"] = cursor
        page = await client.get("/api/v1/activity", params=params)
        assert page.status_code == 200, page.text
        for entry in page.json()["activity"]:
            assert (entry["actionName"], entry["status"]) == ("put", "succeeded"), entry
            seen[int(entry["input"]["value"])] += 1
        cursor = page.json()["nextCursor"]
        if cursor is None:
            return seen


async def counted(data_dir: Path) -> int:
    """Executions counted against the quota, as the database holds them (read on a
    connection of the test's own, not through the server)."""
    engine = create_engine(database_url(data_dir))
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                sa.text("SELECT COALESCE(SUM(count), 0) FROM usage_counters")
            )
            return int(found.scalar_one())
    finally:
        await engine.dispose()


async def retry_until_settled(client: httpx2.AsyncClient, body: dict[str, Any]) -> httpx2.Response:
    """Retry one key until it is no longer in use: only while the killed process's lease
    lasts may it be (each attempt a round trip to the server; bounded by the caller)."""
    while True:
        response = await client.post("/api/v1/actions/execute", json=body)
        if response.status_code != 409:
            return response
        assert response.json()["error"] == "IDEMPOTENCY_KEY_IN_USE", response.text


async def test_kill_9_under_load_loses_no_answered_call_and_leaves_no_key_stuck(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    # What `treadle init` does, in this process (a subprocess would only add its start-up).
    gateway = await Gateway.open(Settings(data_dir, database_url(data_dir), None))
    try:
        made = await initialise(gateway.store, data_dir)
    finally:
        await gateway.close()
    assert made.api_key is not None
    api_key = made.api_key
    load = Load(made.workspace_id)

    async with serving(data_dir, api_key) as first:
        configured = await first.client.post(
            f"/api/v1/workspaces/{load.workspace}/integrations",
            json={
                "integrationName": "kv-store",
                "connectionStrategy": "fixed",
                "settings": {"persistence": {"scope": "workspace"}},
            },
        )
        assert configured.status_code == 201, configured.text
        with anyio.fail_after(60):
            async with anyio.create_task_group() as workers:
                for _ in range(WORKERS):
                    workers.start_soon(load.worker, first.client)
                await load.enough.wait()
                load.stopped = True
                first.process.kill()  # SIGKILL: no shutdown, no drain, calls in flight
            assert await first.process.wait() != 0
    assert load.unanswered, "the kill should have caught calls in flight"

    async with serving(data_dir, api_key) as second:
        client = second.client
        # What survived the kill, before anything runs again.
        records = await executions(client)
        quota = await counted(data_dir)
        for n in load.answered:
            assert records[n] == 1, f"answered put {n} has {records[n]} records"
        assert set(records) <= set(load.answered) | load.unanswered
        # Every record was counted; a count may survive without its record only for a call
        # that was still running when the process died.
        assert sum(records.values()) <= quota <= sum(records.values()) + len(load.unanswered)

        with anyio.fail_after(60):
            # Answered calls: replayed as they were, not run again.
            for n, answer in load.answered.items():
                again = await client.post("/api/v1/actions/execute", json=put(load.workspace, n))
                assert again.status_code == 200, again.text
                assert again.headers.get("Idempotent-Replayed") == "true"
                assert again.json() == answer.json()
            # Unanswered calls: each settles, as documented.
            ran: set[int] = set()
            for n in sorted(load.unanswered):
                retried = await retry_until_settled(client, put(load.workspace, n))
                assert retried.status_code == 200, retried.text
                replayed = retried.headers.get("Idempotent-Replayed") == "true"
                rerun = retried.headers.get("Idempotent-Rerun") == "true"
                assert not (replayed and rerun)
                if replayed:
                    # It had finished: its record was committed before its key completed.
                    assert records[n] == 1, n
                elif rerun:
                    # It had claimed the key and may have run (at least once, not exactly).
                    assert records[n] in (0, 1), n
                    ran.add(n)
                else:
                    # It never claimed the key, so it never ran.
                    assert records[n] == 0, n
                    ran.add(n)
                assert retried.json()["output"] == {"key": f"k{n}", "value": n}

        # Each retry that ran added one record and one count; nothing else changed.
        after = await executions(client)
        assert after == records + Counter(ran)
        assert await counted(data_dir) == quota + len(ran)
        for n in (*load.answered, *load.unanswered):
            assert after[n] >= 1, n

        # The kv-store holds every put, answered or retried.
        listed = await client.post(
            "/api/v1/actions/execute",
            json={
                "workspaceId": load.workspace,
                "integrationName": "kv-store",
                "actionName": "list_keys",
                "input": {"prefix": "k", "limit": 1000},
            },
        )
        assert listed.status_code == 200, listed.text
        expected = {f"k{n}" for n in (*load.answered, *load.unanswered)}
        assert set(listed.json()["output"]["keys"]) == expected
