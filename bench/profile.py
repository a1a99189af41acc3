"""Sample a server with py-spy under one benchmark load and print its hot spots.

    python -m bench.profile call|call-large|list-cached|list-cold|rest
                            [--target treadle|bare|both] [--era legacy|2026-07-28]
                            [--concurrency 8] [--seconds 15] [--calibrate 5] [--aliases 400]
    python -m bench.profile --render PROFILE.txt [BASELINE.txt]

`--target treadle` (default) profiles `treadle serve`; `--target bare` the bare SDK baseline
(`bench/bare_server.py`) under the same load; `--target both` runs treadle, then the baseline,
and prints what treadle spends per operation beyond it. `list-cold` is treadle only (the
baseline has no cache to make cold). Calls and REST run `--concurrency` closed-loop workers
(each a handshake-era session in the legacy era); listings run one after another.

Needs `pip install py-spy` in the venv. Writes py-spy's collapsed stacks to
bench/profiles/profile-<target>-<scenario>-<era>-c<N>.txt, and beside it a .json with the
operations and the server's CPU time (not committed: bench/.gitignore). Prints the share of
non-idle samples per package of the leaf frame, and per function (file:function) the share
that include it (inclusive) and that end in it (self). py-spy's idle detection does not work
in this VM, so samples whose leaf is a wait (epoll, aiosqlite's queue get) are dropped.

Sampling: py-spy runs with --nonblocking unless --blocking is given. Pausing the process
for each sample (py-spy's default) lands samples on system calls in this VM (a `getpid` inside
asyncio's `get_running_loop` showed up as 10% of the time); without pausing, about half of the
event loop's stacks come back cut short at the root, so the self (leaf) columns are sound but
inclusive figures of outer frames (run_asgi, the session manager) undercount.

Per-operation costs: before sampling, the load runs `--calibrate` seconds without py-spy and
the server's CPU time per operation is read from /proc, for the main (event loop) thread and
for the other threads (aiosqlite's) apart. A sample stands for an equal part of its thread
group's CPU per operation: a thread waiting for the GIL is still sampled, so scaling by the
whole process would charge the loop's work to the aiosqlite thread. Samples taken while the
loop thread waits (the GIL after a call that released it: socket sends, sqlite reads, log
writes) still inflate those call sites; `python -m bench.micro` prices them in isolation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench.cases.large import _list_all
from bench.cases.replicas import fresh_database
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
from bench.procs import Bare, Treadle
from bench.rawmcp import MODERN_VERSION, RawSession
from bench.stats import process_cpu_seconds

_TICK = os.sysconf("SC_CLK_TCK")

PROFILES = Path(__file__).resolve().parent / "profiles"
SCENARIOS = ("call", "call-large", "list-cached", "list-cold", "rest")
TARGETS = ("treadle", "bare")
# Leaf frames that are waits, not work: the event loop's epoll, aiosqlite's idle queue get,
# threading waits.
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_connection_worker_thread (aiosqlite/core.py:59)",
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
)


# -- the servers under the load ---------------------------------------------------------------


@dataclass
class Subject:
    """One server under the load: where each scenario sends what."""

    target: str
    pid: int
    stop: Callable[[], None]
    call_url: str = ""
    call_token: str | None = None
    call_names: list[str] = field(default_factory=list)
    list_url: str = ""
    list_token: str | None = None
    rest_url: str = ""
    rest_body: dict[str, Any] = field(default_factory=dict)
    rest_headers: dict[str, str] = field(default_factory=dict)
    # list-cold: make the next listing cold (revision number)
    change: Callable[[int], Awaitable[None]] | None = None


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


async def _treadle_subject(
    scenario: str,
    aliases: int,
    patches: tuple[str, ...] = (),
    source: Path | None = None,
    database_url: str | None = None,
) -> Subject:
    treadle = Treadle.start(patches, source, database_url)
    try:
        ids = await _prepare(treadle, scenario, aliases)
    except BaseException:
        treadle.stop()
        raise
    small_id, small_token = ids["small"]
    big_id, big_token = ids.get("big", ("", ""))
    subject = Subject("treadle", treadle.process.pid, treadle.stop)
    if scenario == "call":
        subject.call_url, subject.call_token = treadle.mcp_url(small_id), small_token
        subject.call_names = [ONE_TOOL]
    elif scenario == "call-large":
        subject.call_url, subject.call_token = treadle.mcp_url(big_id), big_token
        subject.call_names = big_tool_names(aliases)
    if scenario.startswith("list"):
        subject.list_url, subject.list_token = treadle.mcp_url(big_id), big_token
    subject.rest_url = f"{treadle.base_url}/api/v1/actions/execute"
    subject.rest_body = {
        "workspaceId": treadle.workspace_id,
        "integrationName": "bench-one",
        "integrationAlias": "bench",
        "actionName": "echo",
        "input": ARGS,
    }
    subject.rest_headers = {"Authorization": f"Bearer {treadle.api_key}"}
    if scenario == "list-cold":

        async def change(rev: int) -> None:
            async with treadle.rest() as rest:
                await rest.patch(
                    f"/workspaces/{ids['big_workspace']}/integrations/{ids['first_integration']}",
                    json={"settings": {"rev": rev}},
                )

        subject.change = change
    return subject


def _bare_subject(scenario: str, aliases: int) -> Subject:
    if scenario == "list-cold":
        raise SystemExit("list-cold is treadle only: the bare baseline keeps no cache")
    big = scenario in ("call-large", "list-cached")
    bare = Bare.start(aliases if big else 0)
    return Subject(
        "bare",
        bare.process.pid,
        bare.stop,
        call_url=bare.mcp_url,
        call_names=big_tool_names(aliases) if big else [ONE_TOOL],
        list_url=bare.mcp_url,
        rest_url=f"{bare.base_url}/rest/echo",
        rest_body={"input": ARGS},
    )


async def _load(
    subject: Subject, scenario: str, era: str, seconds: float, concurrency: int = 8
) -> int:
    deadline = time.monotonic() + seconds
    done = 0
    async with pooled_client() as http:
        if scenario in ("call", "call-large"):

            async def worker() -> None:
                nonlocal done
                session = await RawSession(http, subject.call_url, era, subject.call_token).open()
                for name in itertools.cycle(subject.call_names):
                    if time.monotonic() >= deadline:
                        break
                    result = await session.call(name, ARGS)
                    if result.get("isError"):
                        raise RuntimeError(f"{subject.target}: {str(result)[:300]}")
                    done += 1
                await session.close()

            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)
        elif scenario == "rest":

            async def rest_worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    response = await http.post(
                        subject.rest_url, json=subject.rest_body, headers=subject.rest_headers
                    )
                    response.raise_for_status()
                    done += 1

            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(rest_worker)
        else:
            rev = 0
            while time.monotonic() < deadline:
                if subject.change is not None:
                    rev += 1
                    await subject.change(rev)
                session = await RawSession(http, subject.list_url, era, subject.list_token).open()
                await _list_all(session)
                await session.close()
                done += 1
    return done


@dataclass
class Run:
    """One stretch of load: operations done and the server's CPU time meanwhile."""

    operations: int
    seconds: float
    cpu_seconds: float  # every thread of the server process
    loop_cpu_seconds: float  # its main thread, which runs the event loop

    @property
    def cpu_ms_per_op(self) -> float:
        return self.cpu_seconds * 1000 / self.operations if self.operations else 0.0

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        loop = self.loop_cpu_seconds * 1000 / self.operations if self.operations else 0.0
        return (
            f"{self.operations} operations in {self.seconds:.1f} s ({self.per_second:.0f}/s), "
            f"server CPU {self.cpu_ms_per_op:.3f} ms/operation "
            f"(event loop thread {loop:.3f}; {self.cpu_seconds / self.seconds:.0%} of a core)"
        )


def thread_cpu_seconds(pid: int) -> float:
    """utime + stime of the process's main thread (the event loop); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _measured(
    subject: Subject, scenario: str, era: str, seconds: float, concurrency: int
) -> Run:
    cpu, loop = process_cpu_seconds(subject.pid), thread_cpu_seconds(subject.pid)
    began = time.monotonic()
    done = await _load(subject, scenario, era, seconds, concurrency)
    return Run(
        done,
        time.monotonic() - began,
        process_cpu_seconds(subject.pid) - cpu,
        thread_cpu_seconds(subject.pid) - loop,
    )


# -- reading collapsed stacks -----------------------------------------------------------------

LOOP, OTHER = "event loop thread", "other threads (aiosqlite)"


@dataclass
class Sample:
    frames: list[str]  # root first, shortened to file:function
    count: int
    thread: str  # LOOP or OTHER
    rooted: bool  # reaches the thread's root (py-spy --nonblocking may cut stacks short)


@dataclass
class Profile:
    """The non-idle samples of one py-spy recording and, from its sidecar, the CPU they cost.

    µs per operation: within each thread group (the event loop thread, the others) a sample
    stands for an equal part of that group's CPU time per operation, measured without py-spy.
    Scaling per group matters: a thread waiting for the GIL still shows up in samples."""

    samples: list[Sample] = field(default_factory=list)
    threads: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    inclusive_us: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    own_us: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.threads.values())

    def thread_us_per_op(self) -> dict[str, float] | None:
        """CPU µs per operation of each thread group (calibrated run)."""
        calibrated = self.meta.get("calibrated")
        if not calibrated or not calibrated.get("operations"):
            return None
        ops = int(calibrated["operations"])
        loop = float(calibrated.get("loop_cpu_seconds", calibrated["cpu_seconds"]))
        return {
            LOOP: loop * 1e6 / ops,
            OTHER: (float(calibrated["cpu_seconds"]) - loop) * 1e6 / ops,
        }

    @property
    def us_per_op(self) -> float | None:
        """µs of server CPU per operation (calibrated run), all threads."""
        groups = self.thread_us_per_op()
        return None if groups is None else sum(groups.values())

    def weight(self, thread: str) -> float:
        """µs per operation that one sample of this thread group stands for (0 if unknown)."""
        groups = self.thread_us_per_op()
        if groups is None or not self.threads[thread]:
            return 0.0
        return groups[thread] / self.threads[thread]

    def packages(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for frame, count in self.own.items():
            found[_package(frame)] += count
        return found

    def packages_us(self) -> defaultdict[str, float]:
        found: defaultdict[str, float] = defaultdict(float)
        for frame, value in self.own_us.items():
            found[_package(frame)] += value
        return found


def load_profile(collapsed: Path) -> Profile:
    profile = Profile()
    sidecar = collapsed.with_suffix(".json")
    if sidecar.exists():
        profile.meta = json.loads(sidecar.read_text())
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
        # The main thread runs the event loop; the others are aiosqlite's connection threads.
        named = next((f for f in raw if f.startswith("thread ")), "")
        loop = "MainThread" in named or any("run_forever" in f for f in frames)
        rooted = any(("run_forever" if loop else "Thread._bootstrap") in f for f in frames)
        thread = LOOP if loop else OTHER
        profile.samples.append(Sample(frames, count, thread, rooted))
        profile.threads[thread] += count
    for sample in profile.samples:
        weight = profile.weight(sample.thread) * sample.count
        for frame in set(sample.frames):
            profile.inclusive[frame] += sample.count
            profile.inclusive_us[frame] += weight
        profile.own[sample.frames[-1]] += sample.count
        profile.own_us[sample.frames[-1]] += weight
    return profile


def _frame(raw: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    if path.endswith("bare_server.py"):
        path = "bench/bare_server.py"
    return f"{path}:{name}" if path else name


def _package(frame: str) -> str:
    return frame.split("/", 1)[0].split(":", 1)[0]


def _us(value: float | None) -> str:
    return "" if not value else f"  {value:7.1f} µs/op"


def summarize(collapsed: Path | Profile, top: int = 30) -> str:
    profile = collapsed if isinstance(collapsed, Profile) else load_profile(collapsed)
    total = profile.total or 1
    lines = [f"{profile.total} samples (non-idle)"]
    per_op = profile.us_per_op
    if per_op is not None:
        lines[0] += f"; {per_op:.0f} µs of server CPU per operation (calibrated)"
    known = per_op is not None
    for name, count in profile.threads.most_common():
        groups = profile.thread_us_per_op() or {}
        lines.append(f"{count / total:7.1%}  {name}{_us(groups.get(name))}")
    truncated = sum(s.count for s in profile.samples if not s.rooted)
    if truncated:
        lines.append(f"{truncated / total:7.1%}  of them cut short by py-spy (--nonblocking)")
    lines += ["", "self time by package of the leaf frame:"]
    us_packages = profile.packages_us()
    lines += [
        f"{count / total:7.1%}  {name}{_us(us_packages[name] if known else None)}"
        for name, count in profile.packages().most_common(16)
    ]
    lines += ["", "inclusive  self   function"]
    for frame, count in profile.inclusive.most_common(top):
        own = profile.own[frame]
        cost = _us(profile.inclusive_us[frame] if known else None)
        lines.append(f"{count / total:7.1%} {own / total:6.1%}  {frame}{cost}")
    lines += ["", "top self time:"]
    for frame, count in profile.own.most_common(top):
        lines.append(
            f"{count / total:7.1%}  {frame}{_us(profile.own_us[frame] if known else None)}"
        )
    found = _features(profile)
    if any(count for count, _us_value in found.values()):
        lines += ["", "request-path features (inclusive: samples matching each rule):"]
        for label, (count, us_value) in found.items():
            if count:
                lines.append(f"{count / total:7.1%}  {label}{_us(us_value if known else None)}")
    return "\n".join(lines)


# -- request-path features: which work a stack is part of ---------------------------------------

Rule = Callable[[list[str]], bool]


def _has(*parts: str) -> Rule:
    """Every part appears in some frame."""
    return lambda frames: all(any(p in f for f in frames) for p in parts)


def _any(*parts: str) -> Rule:
    """Some part appears in some frame."""
    return lambda frames: any(p in f for f in frames for p in parts)


def _within(outer: str, *, not_below: Sequence[str] = ()) -> Rule:
    """A frame ends with `outer` and no frame below (deeper than) it matches any of `not_below`:
    the work a wrapper does itself, not what it calls on to."""

    def rule(frames: list[str]) -> bool:
        for i, frame in enumerate(frames):
            if frame.endswith(outer):
                return not any(n in f for f in frames[i + 1 :] for n in not_below)
        return False

    return rule


def _calls(outer: str, inner: Sequence[str]) -> Rule:
    """A frame ending with `outer` calls (directly) a frame starting with one of `inner`."""

    def rule(frames: list[str]) -> bool:
        return any(
            f.endswith(outer) and frames[i + 1].startswith(tuple(inner))
            for i, f in enumerate(frames[:-1])
        )

    return rule


def _outside_tasks(frames: list[str]) -> bool:
    """Loop-thread work that runs no task or callback: _run_once, select, timers."""
    return any("run_forever" in f for f in frames) and not any("Handle._run" in f for f in frames)


def _not_loop(frames: list[str]) -> bool:
    return any("Thread._bootstrap" in f for f in frames) and not any(
        "run_forever" in f for f in frames
    )


_APP_BELOW_ACCESSLOG = ("ExceptionMiddleware.__call__",)
FEATURES: tuple[tuple[str, Rule], ...] = (
    # What both servers do.
    ("event loop outside tasks (_run_once, epoll, timers)", _outside_tasks),
    ("socket reads + h11 parsing (data_received)", _has("_read_ready__data_received")),
    ("response writes (h11 send + socket)", _has("RequestResponseCycle.send")),
    ("ASGI app (uvicorn run_asgi, all of it)", _has("RequestResponseCycle.run_asgi")),
    (
        "SDK session manager _handle_request",
        _has("StreamableHTTPSessionManager._handle_request"),
    ),
    ("SDK JSON-RPC dispatch of the request", _has("JSONRPCDispatcher._handle_request")),
    ("SDK runner (_on_request, all middleware)", _has("ServerRunner._on_request")),
    ("  tool handler call_tool (all)", _any(":McpFace.call_tool", ":BareServer.call_tool")),
    ("sse_starlette response", _has("sse_starlette/")),
    ("pydantic (any frame)", _has("pydantic")),
    ("anyio task groups / cancel scopes (any)", _has("anyio/_backends/_asyncio.py:CancelScope")),
    ("logging (any frame)", _has("logging/__init__.py")),
    # What treadle adds.
    (
        "treadle AccessLog: own work + log line",
        _within("AccessLog.__call__", not_below=_APP_BELOW_ACCESSLOG),
    ),
    ("  of which logging (format + write)", _calls("AccessLog.__call__", ["logging/"])),
    ("treadle McpEndpoint._authenticate", _has("McpEndpoint._authenticate")),
    ("VersionProbe.read (every caller)", _has("VersionProbe.read")),
    (
        "treadle _track_handshake_clients own (+hub)",
        _within("_track_handshake_clients", not_below=("RequestStateBoundary.__call__",)),
    ),
    (
        "SDK RequestStateBoundary own",
        _within("RequestStateBoundary.__call__", not_below=("_serve_shaped_page",)),
    ),
    (
        "treadle _serve_shaped_page own",
        _within("_serve_shaped_page", not_below=("_on_request.<locals>._inner",)),
    ),
    (
        "treadle call_tool, not the executor",
        _within(":McpFace.call_tool", not_below=("Executor.execute",)),
    ),
    ("  progress task group (call_tool -> anyio)", _calls(":McpFace.call_tool", ["anyio/"])),
    ("  _report_progress task", _has("McpFace._report_progress")),
    ("  ToolsetCache.get", _has("ToolsetCache.get")),
    ("  to_result", _has("treadle/mcp/results.py")),
    ("treadle Executor.execute (pipeline)", _has("Executor.execute")),
    ("  validate_input (jsonschema)", _has("validate_input")),
    ("  config.workspace", _has("Executor._execute", "ConfigCache.workspace")),
    ("  ledger.record (queueing)", _has("ExecutionLedger.record")),
    ("  quota reserve", _has("ExecutionLedger.reserve")),
    ("  rate limiter", _has("RateLimiter.hit")),
    ("  approvals check", _has("ApprovalDesk.check")),
    ("ledger writer on the loop (ExecutionLedger.run)", _has("ExecutionLedger.run")),
    ("resync hub (ResyncHub.run)", _has("ResyncHub.run")),
    ("gateway background tasks", _has("run_background")),
    ("other threads (aiosqlite workers)", _not_loop),
    ("sqlalchemy (any frame)", _has("sqlalchemy/")),
    ("aiosqlite on the loop", lambda f: not _not_loop(f) and _has("aiosqlite/")(f)),
)


def _features(profile: Profile) -> dict[str, tuple[int, float]]:
    """Per rule: matching samples and the µs per operation they stand for."""
    found: dict[str, tuple[int, float]] = {}
    for label, rule in FEATURES:
        count, us = 0, 0.0
        for sample in profile.samples:
            if rule(sample.frames):
                count += sample.count
                us += sample.count * profile.weight(sample.thread)
        found[label] = (count, us)
    return found


def compare(mine: Profile, base: Profile, top: int = 30) -> str:
    """µs per operation, a profile vs its baseline: packages, features and functions."""
    mine_groups, base_groups = mine.thread_us_per_op(), base.thread_us_per_op()
    if mine_groups is None or base_groups is None:
        return "no calibration in the sidecars: cannot compare per operation"
    lines = [f"server CPU per operation (calibrated), µs: {'this':>8} {'base':>8} {'extra':>8}"]
    for group in (LOOP, OTHER):
        x, y = mine_groups[group], base_groups[group]
        lines.append(f"  {group:<48} {x:8.0f} {y:8.0f} {x - y:+8.0f}")
    x, y = sum(mine_groups.values()), sum(base_groups.values())
    lines.append(f"  {'all threads':<48} {x:8.0f} {y:8.0f} {x - y:+8.0f}")

    def table(a: Mapping[str, float], b: Mapping[str, float]) -> list[tuple[str, float, float]]:
        return [(name, a.get(name, 0.0), b.get(name, 0.0)) for name in dict.fromkeys([*a, *b])]

    lines += ["", f"{'self time by package of the leaf frame, µs/op':<50} {'this':>8} {'base':>8}"]
    packages = table(mine.packages_us(), base.packages_us())
    packages.sort(key=lambda r: -abs(r[1] - r[2]))
    for name, x, y in packages[:20]:
        lines.append(f"  {name:<48} {x:8.1f} {y:8.1f} {x - y:+8.1f}")
    lines += ["", "request-path features (inclusive), µs/op:"]
    theirs = _features(base)
    for name, (count, x) in _features(mine).items():
        y = theirs[name][1]
        if count or theirs[name][0]:
            lines.append(f"  {name:<48} {x:8.1f} {y:8.1f} {x - y:+8.1f}")
    lines += ["", f"functions by extra self µs/op (top {top}):   extra     this     base"]
    functions = table(mine.own_us, base.own_us)
    functions.sort(key=lambda r: -(r[1] - r[2]))
    for name, x, y in functions[:top]:
        lines.append(f"  {x - y:+8.1f} {x:8.1f} {y:8.1f}  {name}")
    return "\n".join(lines)


# -- running ----------------------------------------------------------------------------------


@dataclass
class Options:
    scenario: str
    era: str
    seconds: float
    calibrate: float
    aliases: int
    top: int
    concurrency: int
    native: bool
    nonblocking: bool
    database: str = "sqlite"


async def profile_target(target: str, options: Options) -> Path:
    if target == "treadle" and options.database == "postgresql":
        async with fresh_database() as url:
            return await _profile_target(target, options, url)
    return await _profile_target(target, options, None)


async def _profile_target(target: str, options: Options, database_url: str | None) -> Path:
    scenario, era = options.scenario, options.era
    if target == "treadle":
        subject = await _treadle_subject(scenario, options.aliases, database_url=database_url)
    else:
        subject = _bare_subject(scenario, options.aliases)
    try:
        await _load(subject, scenario, era, 2.0, options.concurrency)  # warm-up
        calibrated = await _measured(subject, scenario, era, options.calibrate, options.concurrency)
        PROFILES.mkdir(exist_ok=True)
        on = "-postgresql" if database_url is not None else ""
        out = PROFILES / f"profile-{target}{on}-{scenario}-{era}-c{options.concurrency}.txt"
        command = ["py-spy", "record", "-p", str(subject.pid), "-r", "200"]
        command += ["-d", str(int(options.seconds)), "--format", "raw", "-o", str(out)]
        command += ["--threads", *(["--native"] if options.native else [])]
        command += ["--nonblocking"] if options.nonblocking else []
        spy = subprocess.Popen(  # noqa: ASYNC220 (started once, waited for below)
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        sampled = await _measured(subject, scenario, era, options.seconds, options.concurrency)
        spy.wait(timeout=60)
        meta = {
            "target": target,
            "scenario": scenario,
            "era": era,
            "concurrency": options.concurrency,
            "calibrated": calibrated.__dict__,
            "sampled": sampled.__dict__,
        }
        out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        print(
            f"{target} {scenario} {era} c{options.concurrency}:\n"
            f"  without py-spy: {calibrated.describe()}\n"
            f"  under py-spy:   {sampled.describe()}\n"
            f"  stacks: {out}\n"
        )
        print(summarize(out, options.top))
        print()
        return out
    finally:
        subject.stop()


async def main_async(targets: Sequence[str], options: Options) -> None:
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    written = [await profile_target(target, options) for target in targets]
    if len(written) == 2:
        print(f"=== {targets[0]} vs {targets[1]}: {options.scenario} {options.era} ===")
        print(compare(load_profile(written[0]), load_profile(written[1]), options.top))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("scenario", nargs="?", choices=SCENARIOS)
    parser.add_argument("--target", choices=[*TARGETS, "both"], default="treadle")
    parser.add_argument("--era", choices=["legacy", MODERN_VERSION], default="legacy")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument(
        "--calibrate", type=float, default=5, help="seconds of load without py-spy first"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="closed-loop workers (call, rest)"
    )
    parser.add_argument("--aliases", type=int, default=400, help="x 25 tools (list-*)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="treadle's store: the data dir's SQLite file, or a fresh PostgreSQL database on "
        "TREADLE_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432)",
    )
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument(
        "--blocking",
        action="store_true",
        help="let py-spy pause the server for each sample (whole stacks, but in this VM the "
        "samples pile up on system calls)",
    )
    parser.add_argument(
        "--render",
        nargs="+",
        type=Path,
        metavar="PROFILE",
        help="print an earlier profile; with a second one, the first's extra µs/op over it",
    )
    args = parser.parse_args()
    if args.render:
        if len(args.render) > 2:
            parser.error("--render takes one or two profiles")
        first = load_profile(args.render[0])
        if len(args.render) == 1:
            print(summarize(first, args.top))
        else:
            print(compare(first, load_profile(args.render[1]), args.top))
        return
    if args.scenario is None:
        parser.error("a scenario is required (or --render)")
    targets = list(TARGETS) if args.target == "both" else [args.target]
    options = Options(
        args.scenario,
        args.era,
        args.seconds,
        args.calibrate,
        args.aliases,
        args.top,
        args.concurrency,
        args.native,
        not args.blocking,
        args.database,
    )
    anyio.run(main_async, targets, options)


if __name__ == "__main__":
    main()
