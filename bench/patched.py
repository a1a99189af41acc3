"""`treadle` with parts of its request path switched off, to measure what each part costs.

    TREADLE_BENCH_PATCHES=no-access-line,no-progress python -m bench.patched serve ...

Measurement only (`python -m bench.ablate`): every patch is applied in this process before
the CLI starts and breaks some guarantee treadle makes (no activity records, no resync of
handshake-era clients, ...), so none of this is ever a way to run treadle. Unknown names fail.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import anyio


def _replace(owner: object, name: str, value: object) -> None:
    """Swap one attribute of a module or class (typed loosely on purpose: this is a patch)."""
    if not hasattr(owner, name):
        raise SystemExit(f"bench.patched is out of date: {owner!r} has no {name!r}")
    setattr(owner, name, value)


class _NoTaskGroup:
    """Stands in for the task group `McpFace.call_tool` opens per call for progress reports:
    the call runs, nothing is started beside it."""

    class _Scope:
        def cancel(self) -> None:
            pass

    cancel_scope = _Scope()

    async def __aenter__(self) -> _NoTaskGroup:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    def start_soon(self, *_args: object, **_kwargs: object) -> None:
        pass


def _no_access_line() -> None:
    logging.getLogger("treadle.access").disabled = True


def _no_access_middleware() -> None:
    import treadle.http_app

    class _Absent:
        def __new__(cls, app: Any) -> Any:  # the middleware stack gets the app itself
            return app

    _replace(treadle.http_app, "AccessLog", _Absent)


def _no_progress() -> None:
    import treadle.mcp.server

    shim = types.ModuleType("anyio_without_task_groups")
    shim.__dict__.update(anyio.__dict__)
    _replace(shim, "create_task_group", _NoTaskGroup)
    _replace(treadle.mcp.server, "anyio", shim)


def _drop_middleware(matches: Callable[[Any], bool]) -> None:
    from treadle.mcp.server import McpFace

    original = McpFace.__init__

    def init(self: McpFace, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.server.middleware[:] = [m for m in self.server.middleware if not matches(m)]

    _replace(McpFace, "__init__", init)


def _no_boundary() -> None:
    from mcp.server.request_state import RequestStateBoundary

    _drop_middleware(lambda m: isinstance(m, RequestStateBoundary))


def _no_track() -> None:
    _drop_middleware(lambda m: getattr(m, "__name__", "") == "_track_handshake_clients")


def _no_shaped() -> None:
    _drop_middleware(lambda m: getattr(m, "__name__", "") == "_serve_shaped_page")


def _no_ledger() -> None:
    from treadle.store.ledger import ExecutionLedger

    async def record(_self: ExecutionLedger, **_values: Any) -> None:
        return None

    async def reserve(
        _self: ExecutionLedger, _org_id: str, _period: str, _limit: int
    ) -> tuple[bool, int]:
        return True, 0

    _replace(ExecutionLedger, "record", record)
    _replace(ExecutionLedger, "reserve", reserve)


def _no_resync_poll() -> None:
    from treadle.mcp.resync import ResyncHub

    original = ResyncHub.__init__

    def init(self: ResyncHub, *args: Any, **kwargs: Any) -> None:
        kwargs["poll_seconds"] = 3600.0
        original(self, *args, **kwargs)

    _replace(ResyncHub, "__init__", init)


def _fixed_version() -> None:
    from treadle.store.database import Database

    original = Database.config_version
    known: dict[int, int] = {}  # id(database) -> version
    watched: set[int] = set()

    async def config_version(self: Database) -> int:
        # Read once, then answered from memory until this process commits a configuration
        # change (no other process changes it while the load runs): no VersionProbe reads.
        key = id(self)
        if key not in watched:
            watched.add(key)

            def forget(_change: object) -> None:
                known.pop(key, None)

            self.subscribe(forget)
        found = known.get(key)
        if found is None:
            found = known[key] = await original(self)
        return found

    _replace(Database, "config_version", config_version)


def _no_pipeline() -> None:
    from bench.integrations import echo_output
    from treadle.engine import ExecuteRequest, Executor
    from treadle.engine.outcome import Outcome, Succeeded

    async def execute(_self: Executor, request: ExecuteRequest) -> Outcome:
        return Succeeded(echo_output(dict(request.input)), 0, None)

    _replace(Executor, "execute", execute)


def _gc_log() -> None:
    """Not a patch: log the cyclic collector's work every 5 s (treadle.bench.gc lines)."""
    import gc
    import threading
    import time

    log = logging.getLogger("treadle.bench.gc")
    spent = [0.0, 0.0, 0.0]
    runs = [0, 0, 0]
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[info["generation"]] += time.perf_counter() - started[0]
            runs[info["generation"]] += 1

    gc.callbacks.append(callback)

    def report() -> None:
        while True:
            time.sleep(5)
            log.info(
                "collections %s, seconds %s, tracked %d",
                runs,
                [round(x, 3) for x in spent],
                len(gc.get_objects()),
            )

    threading.Thread(target=report, daemon=True).start()


def _gc_freeze() -> None:
    """Move everything imported so far out of the cyclic GC's reach (gc.freeze)."""
    import gc

    import treadle.http_app  # the server's modules, before freezing
    import treadle.server  # noqa: F401

    gc.collect()
    gc.freeze()


PATCHES: dict[str, tuple[Callable[[], None], str]] = {
    "no-access-line": (_no_access_line, "treadle.access logger disabled (no line per request)"),
    "no-access-mw": (_no_access_middleware, "AccessLog middleware not installed at all"),
    "no-progress": (_no_progress, "call_tool opens no task group for progress reports"),
    "no-boundary": (_no_boundary, "SDK RequestStateBoundary middleware removed"),
    "no-track": (_no_track, "_track_handshake_clients middleware removed"),
    "no-shaped": (_no_shaped, "_serve_shaped_page middleware removed"),
    "no-ledger": (_no_ledger, "no activity record, no quota count (no writer transactions)"),
    "no-resync-poll": (_no_resync_poll, "ResyncHub polls the version row hourly, not every 50 ms"),
    "fixed-version": (_fixed_version, "config version from memory: no VersionProbe reads"),
    "no-pipeline": (_no_pipeline, "Executor.execute only runs the bench action"),
    "gc-freeze": (_gc_freeze, "gc.freeze() after importing the server (full GCs skip them)"),
    "gc-log": (_gc_log, "(instrument) log the cyclic GC's collections and time every 5 s"),
}


def apply(names: list[str]) -> None:
    for name in names:
        if name not in PATCHES:
            raise SystemExit(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
        PATCHES[name][0]()


def main() -> None:
    names = [n for n in os.environ.get("TREADLE_BENCH_PATCHES", "").split(",") if n]
    apply(names)
    from treadle.cli import main as treadle_main

    sys.exit(treadle_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
