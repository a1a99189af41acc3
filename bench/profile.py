"""Sample `treadle serve` with py-spy under one benchmark load and print its hot spots.

    python -m bench.profile call|call-large|list-cached|list-cold|rest [--era legacy|2026-07-28]
                                [--seconds 15] [--aliases 400]

Needs `pip install py-spy` in the venv. Writes py-spy's collapsed stacks to
bench/profiles/profile-<scenario>-<era>.txt (not committed: bench/.gitignore) and prints the
share of non-idle samples per package of the leaf frame, and per function (file:function) the
share that include it (inclusive) and that end in it (self). py-spy's idle detection does not
work in this VM, so samples whose leaf is a wait (epoll, aiosqlite's queue get) are dropped.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from bench.cases.large import _list_all
from bench.config import (
    ARGS,
    ONE_TOOL,
    big_tool_names,
    configure,
    configure_many,
    create_server,
    create_workspace,
)
from bench.load import pooled_client
from bench.procs import Treadle
from bench.rawmcp import MODERN_VERSION, RawSession

PROFILES = Path(__file__).resolve().parent / "profiles"
# Leaf frames that are waits, not work: the event loop's epoll, aiosqlite's idle queue get,
# threading waits.
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_connection_worker_thread (aiosqlite/core.py:59)",
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
)


async def _prepare(treadle: Treadle, scenario: str, aliases: int) -> dict[str, Any]:
    async with treadle.rest() as rest:
        await configure(rest, treadle.workspace_id, "bench-one", "bench")
        small = await create_server(rest, treadle.workspace_id, "one")
        found: dict[str, Any] = {"small": small}
        if scenario.startswith("list") or scenario == "call-large":
            workspace = await create_workspace(rest, "large")
            await configure_many(rest, workspace, aliases)
            found["big"] = await create_server(rest, workspace, "large")
            found["big_workspace"] = workspace
            listed = await rest.get(f"/workspaces/{workspace}/integrations")
            found["first_integration"] = listed.json()["integrations"][0]["id"]
    return found


async def _load(
    treadle: Treadle,
    scenario: str,
    era: str,
    ids: dict[str, Any],
    seconds: float,
    aliases: int = 400,
) -> int:
    deadline = time.monotonic() + seconds
    done = 0
    async with pooled_client() as http:
        if scenario in ("call", "call-large"):
            server_id, token = ids["small"] if scenario == "call" else ids["big"]
            names = [ONE_TOOL] if scenario == "call" else big_tool_names(aliases)

            async def worker() -> None:
                nonlocal done
                session = await RawSession(http, treadle.mcp_url(server_id), era, token).open()
                for name in itertools.cycle(names):
                    if time.monotonic() >= deadline:
                        break
                    await session.call(name, ARGS)
                    done += 1
                await session.close()

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(worker)
        elif scenario == "rest":
            url = f"{treadle.base_url}/api/v1/actions/execute"
            body = {
                "workspaceId": treadle.workspace_id,
                "integrationName": "bench-one",
                "integrationAlias": "bench",
                "actionName": "echo",
                "input": ARGS,
            }
            headers = {"Authorization": f"Bearer {treadle.api_key}"}

            async def rest_worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    (await http.post(url, json=body, headers=headers)).raise_for_status()
                    done += 1

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(rest_worker)
        else:
            server_id, token = ids["big"]
            rev = 0
            while time.monotonic() < deadline:
                if scenario == "list-cold":
                    rev += 1
                    async with treadle.rest() as rest:
                        await rest.patch(
                            f"/workspaces/{ids['big_workspace']}/integrations/"
                            f"{ids['first_integration']}",
                            json={"settings": {"rev": rev}},
                        )
                session = await RawSession(http, treadle.mcp_url(server_id), era, token).open()
                await _list_all(session)
                await session.close()
                done += 1
    return done


def summarize(collapsed: Path, top: int = 30) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        raw = stack.split(";")
        if any(marker in raw[-1] for marker in IDLE_LEAVES):
            continue  # py-spy's idle detection does not work in this VM: drop waits by hand
        frames = [_frame(f) for f in raw if not f.startswith(("thread ", "process "))]
        frames = [f for f in frames if f]
        if not frames:
            continue
        # The loop thread runs asyncio; the others are aiosqlite's connection threads.
        loop = any("run_forever" in f for f in frames)
        threads["event loop thread" if loop else "other threads (aiosqlite)"] += count
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples (non-idle)"]
    lines += [f"{count / total:7.1%}  {name}" for name, count in threads.most_common()]
    packages: Counter[str] = Counter()
    for frame, count in own.items():
        packages[frame.split("/", 1)[0].split(":", 1)[0]] += count
    lines += ["", "self time by package of the leaf frame:"]
    lines += [f"{count / total:7.1%}  {name}" for name, count in packages.most_common(14)]
    lines += ["", "inclusive  self   function"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"{count / total:7.1%} {own[frame] / total:6.1%}  {frame}")
    lines += ["", "top self time:"]
    for frame, count in own.most_common(top):
        lines.append(f"{count / total:7.1%}  {frame}")
    return "\n".join(lines)


def _frame(raw: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}" if path else name


async def main_async(scenario: str, era: str, seconds: float, aliases: int, top: int) -> None:
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    treadle = Treadle.start()
    try:
        ids = await _prepare(treadle, scenario, aliases)
        await _load(treadle, scenario, era, ids, 2.0, aliases)  # warm-up
        PROFILES.mkdir(exist_ok=True)
        out = PROFILES / f"profile-{scenario}-{era}.txt"
        spy = subprocess.Popen(  # noqa: ASYNC220 (started once, waited for below)
            [
                "py-spy",
                "record",
                "-p",
                str(treadle.process.pid),
                "-r",
                "200",
                "-d",
                str(int(seconds)),
                "--format",
                "raw",
                "-o",
                str(out),
                "--threads",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        done = await _load(treadle, scenario, era, ids, seconds, aliases)
        spy.wait(timeout=60)
        print(f"{scenario} {era}: {done} operations in {seconds:g} s under py-spy\n")
        print(summarize(out, top))
    finally:
        treadle.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument(
        "scenario", choices=["call", "call-large", "list-cached", "list-cold", "rest"]
    )
    parser.add_argument("--era", choices=["legacy", MODERN_VERSION], default="legacy")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--aliases", type=int, default=400, help="x 25 tools (list-*)")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    anyio.run(main_async, args.scenario, args.era, args.seconds, args.aliases, args.top)


if __name__ == "__main__":
    main()
