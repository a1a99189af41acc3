"""CPU cost of single pieces of treadle's tools/call path, in one process, without HTTP.

    python -m bench.micro [--repeat 3]

Each case runs a piece of work many times in an event loop and reports CPU µs (process time,
every thread) per piece, minus an empty loop of the same shape. These are the prices that
`python -m bench.profile` and `python -m bench.ablate` see spread over a whole server; run
them on a quiet machine. Cases:

- progress task group: what `McpFace.call_tool` adds around each execution (a task group, a
  `_report_progress` task that sleeps, a cancel), vs awaiting the same coroutine directly;
- access line: one `treadle.access` log line through the handler `treadle serve` installs
  (format + write to a file);
- version probe: one `VersionProbe.read` of the real database (4 per tools/call);
- hash token: `hash_token` (2 per tools/call: admission cache key, session user);
- ledger group of N: one `ExecutionLedger` group commit of N activity records and one quota
  increment (the writer commits one group every ~25 ms while calls arrive).
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.ids import hash_token
from treadle.settings import Settings

Case = Callable[[int], Awaitable[float]]  # runs n pieces, returns CPU seconds (all threads)
# CPU seconds of this (the event loop's) thread in the latest case, for the split
_loop_cpu: list[float] = [0.0]


def _cpu() -> float:
    return time.process_time()


async def _executed() -> int:
    await anyio.lowlevel.checkpoint()
    return 1


async def _sleeper(seconds: float) -> None:
    # The shape of `McpFace._report_progress`: sleep, report, again.
    while True:  # noqa: ASYNC110 (a copy of the code measured)
        await anyio.sleep(seconds)


async def progress_group(n: int) -> float:
    began = _cpu()
    for _ in range(n):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_sleeper, 1.0)
            await _executed()
            tg.cancel_scope.cancel()
    return _cpu() - began


async def progress_none(n: int) -> float:
    began = _cpu()
    for _ in range(n):
        await _executed()
    return _cpu() - began


def _access_logger(directory: Path) -> logging.Logger:
    # What `treadle serve` installs (cli._setup_logging), writing to a file as the bench does.
    handler = logging.StreamHandler(open(directory / "access.log", "w"))  # noqa: SIM115
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("bench.micro.access")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


async def access_line(n: int, logger: logging.Logger) -> float:
    began = _cpu()
    started = time.perf_counter()
    for _ in range(n):
        logger.info(
            "%s %s %d %.1fms",
            "POST",
            "/mcp/srv_0123456789abcdef",
            200,
            (time.perf_counter() - started) * 1000,
        )
    return _cpu() - began


async def empty(n: int) -> float:
    began = _cpu()
    for _ in range(n):
        pass
    return _cpu() - began


async def version_probe(n: int, gateway: Gateway) -> float:
    db = gateway.store.db
    began = _cpu()
    for _ in range(n):
        await db.config_version()
    return _cpu() - began


async def token_hash(n: int) -> float:
    token = "mcp_" + "x" * 43
    began = _cpu()
    for _ in range(n):
        hash_token(token)
    return _cpu() - began


def _activity(org_id: str, workspace_id: str) -> dict[str, Any]:
    # The values `Executor._record` hands the ledger for a bench call.
    return {
        "org_id": org_id,
        "workspace_id": workspace_id,
        "type": "action_execution",
        "source": "mcp_tools",
        "actor": "mcp_server:srv_0123456789abcdef",
        "status": "succeeded",
        "integration_name": "bench-one",
        "integration_alias": "bench",
        "action_name": "echo",
        "end_user_id": None,
        "duration_ms": 0,
        "error_code": None,
        "input": {"text": "hello", "count": 3},
    }


async def ledger_groups(
    n: int, gateway: Gateway, org_id: str, workspace_id: str, size: int
) -> float:
    from treadle.clock import now_iso
    from treadle.ids import new_uuid

    ledger = gateway.store.ledger
    period = time.strftime("%Y-%m")
    began, loop_began = _cpu(), time.thread_time()
    for _ in range(n):
        for _ in range(size):
            # What `record` and `reserve` queue while the writer runs.
            ledger._records.append(
                {"id": new_uuid(), "created_at": now_iso(), **_activity(org_id, workspace_id)}
            )
        ledger._increments[(org_id, period)] += size
        await ledger._write_queued()
    _loop_cpu[0] = time.thread_time() - loop_began
    return _cpu() - began


async def _ledger_case(n: int, *, gateway: Gateway, org: str, ws: str, size: int) -> float:
    return await ledger_groups(n, gateway, org, ws, size)


async def measure(name: str, case: Case, n: int, repeat: int, split: bool = False) -> None:
    await case(max(1, n // 10))  # warm-up
    samples, loop = [], []
    for _ in range(repeat):
        samples.append(await case(n) * 1e6 / n)
        loop.append(_loop_cpu[0] * 1e6 / n)
    text = f"{name:<40} {statistics.median(samples):9.1f} µs"
    if split:
        text += f" (event loop thread {statistics.median(loop):.1f})"
    print(text + "  runs: " + ", ".join(f"{s:.1f}" for s in samples))


async def main_async(repeat: int) -> None:
    print(f"{'case':<40} {'CPU per piece':>12}")
    with tempfile.TemporaryDirectory(prefix="treadle-micro-") as directory:
        path = Path(directory)
        gateway = await Gateway.open(Settings.from_env(path))
        try:
            ids = await initialise(gateway.store, path)
            base = await progress_none(20_000)
            group = await progress_group(20_000)
            print(
                f"{'progress task group (minus direct await)':<40} "
                f"{(group - base) * 1e6 / 20_000:9.1f} µs"
            )
            await measure("progress task group (whole)", progress_group, 20_000, repeat)
            logger = _access_logger(path)
            await measure("access line", lambda n: access_line(n, logger), 20_000, repeat)
            await measure("version probe read", lambda n: version_probe(n, gateway), 20_000, repeat)
            await measure("hash token", token_hash, 50_000, repeat)
            for size in (1, 8, 32):
                await measure(
                    f"ledger group of {size} (per group)",
                    functools.partial(
                        _ledger_case,
                        gateway=gateway,
                        org=ids.org_id,
                        ws=ids.workspace_id,
                        size=size,
                    ),
                    200,
                    repeat,
                    split=True,
                )
        finally:
            await gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main_async, args.repeat)


if __name__ == "__main__":
    main()
