"""Closed-loop HTTP/1.1 load from `wrk` (Debian's package): a client that costs the machine
almost nothing, for throughput on 2 cores where a Python client would take a core itself.

Each load is one or more `wrk -t1` processes, each with its own keep-alive connections to
one URL, POSTing one fixed JSON-RPC body. A small Lua script counts answers that are not a
successful tool result (non-200, or a JSON-RPC error, or `isError`) and prints the totals
and latency percentiles as one JSON line. The CPU each wrk used is read from its rusage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCRIPT = r"""
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
for name, value in string.gmatch(os.getenv("WRK_HEADERS"), "([^\n:]+): ([^\n]*)") do
  wrk.headers[name] = value
end
bad = 0
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"isError":true', 1, true)
     or string.find(body, '"error":{', 1, true) then
    bad = bad + 1
  end
end
threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local failed = 0
  for _, t in ipairs(threads) do failed = failed + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"micros":%d,"bad":%d,"socketErrors":%d,' ..
    '"p50":%.3f,"p90":%.3f,"p99":%.3f}\n',
    summary.requests, summary.duration, failed,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


@dataclass
class Target:
    url: str
    headers: dict[str, str]
    body: bytes
    connections: int


def _priority(pid: int, niceness: int | None) -> None:
    if niceness is not None:
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, pid, niceness)


def run(targets: list[Target], seconds: float, niceness: int | None = None) -> dict[str, Any]:
    """All `targets` loaded at once for `seconds`: requests, errors, the pooled percentiles
    (the mean of each wrk's, weighted by its requests) and the wrk processes' CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT)
        running = []
        for number, target in enumerate(targets):
            out = (Path(tmp) / f"out-{number}.json").open("wb")
            env = dict(os.environ)
            env["WRK_BODY"] = target.body.decode()
            env["WRK_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in target.headers.items())
            process = subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    f"-c{target.connections}",
                    f"-d{max(1, round(seconds))}s",
                    "--timeout",
                    "30s",
                    "-s",
                    str(script),
                    target.url,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
            _priority(process.pid, niceness)
            running.append((process, out, Path(tmp) / f"out-{number}.json"))
        found: list[dict[str, Any]] = []
        cpu = 0.0
        for process, out, path in running:
            _pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            out.close()
            cpu += usage.ru_utime + usage.ru_stime
            text = path.read_text(errors="replace")
            lines = [line for line in text.splitlines() if line.startswith("{")]
            if process.returncode != 0 or not lines:
                raise RuntimeError(f"wrk failed ({process.returncode}): {text[-500:]}")
            found.append(json.loads(lines[-1]))
    requests: int = sum(f["requests"] for f in found)
    wall = max(f["micros"] for f in found) / 1e6

    def pooled(name: str) -> float:
        total: float = sum(f[name] * f["requests"] for f in found)
        return total / max(1, requests)

    return {
        "requests": requests,
        "seconds": wall,
        "errors": sum(f["bad"] + f["socketErrors"] for f in found),
        "p50": pooled("p50"),
        "p90": pooled("p90"),
        "p99": pooled("p99"),
        "clientCpuSeconds": cpu,
    }
