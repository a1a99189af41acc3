"""Percentiles, the machine description, and how busy the machine was with other work."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else math.nan,
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memoryGiB": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "mcp": version("mcp"),
        "uvicorn": version("uvicorn"),
        "kernel": platform.release(),
        "loadavgAtStart": os.getloadavg(),
    }


def source_state(repo: Path) -> dict[str, Any]:
    """Which treadle was measured: HEAD and how many files differ from it (read-only git)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=20, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    changed = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"head": git("rev-parse", "--short", "HEAD"), "uncommittedFiles": len(changed)}


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one live process (seconds); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _ours_cpu_seconds() -> float:
    """CPU of this process, its reaped children, and every live descendant."""
    me = os.getpid()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(entry.name)] = int(fields[1])
    ours = {me}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                grew = True
    times = os.times()
    total = times.children_user + times.children_system
    return total + sum(process_cpu_seconds(pid) for pid in ours)


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


@dataclass
class Noise:
    """How much of the machine other processes used while a case ran."""

    started: float = 0.0
    busy: float = 0.0
    ours: float = 0.0

    def start(self) -> Noise:
        self.started = time.monotonic()
        self.busy = _machine_busy_seconds()
        self.ours = _ours_cpu_seconds()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        busy = _machine_busy_seconds() - self.busy
        ours = _ours_cpu_seconds() - self.ours
        cores = os.cpu_count() or 1
        return {
            "wallSeconds": round(wall, 2),
            "benchCpuShare": round(ours / (wall * cores), 3) if wall else 0.0,
            "otherCpuShare": round(max(0.0, busy - ours) / (wall * cores), 3) if wall else 0.0,
        }
