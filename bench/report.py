"""Tables (markdown, so they paste into docs/benchmarks.md) and the PASS/FAIL targets."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

ERAS = ("legacy", "2026-07-28")


def _ms(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _x(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _server(side: dict[str, Any]) -> str:
    server = side.get("server")
    return _ms(server["p50"]) if server else "-"


def _sdk_listing(found: dict[str, Any]) -> str:
    if not found["ok"]:
        return f"FAILED: {found['error']}"
    return f"{_ms(found['ms'])} ms, {found['tools']} tools in {found['pages']} pages"


def _versus(label: str, row: dict[str, Any]) -> list[str]:
    """The columns the tools/call and REST tables share: treadle against the bare baseline."""
    t, b = row["treadle"], row["bare"]
    return [
        label,
        f"{_ms(t['p50'])} / {_ms(t['p99'])}",
        f"{_ms(b['p50'])} / {_ms(b['p99'])}",
        _x(row["ratioP50"]),
        f"{_server(t)} / {_server(b)}",
        f"{t['perSecond']:.0f} / {b['perSecond']:.0f}",
        _x(row["throughputRatio"]),
        f"{t['serverCpuMsPerCall']:.2f} / {b['serverCpuMsPerCall']:.2f}",
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    cases = results["cases"]
    out: list[dict[str, Any]] = []

    def add(name: str, measured: str, ok: bool | None, note: str = "") -> None:
        verdict = "N/A" if ok is None else ("PASS" if ok else "FAIL")
        if note and ok is not None:
            # Not the size the target is about: say what it would be, count it as neither.
            verdict, note = "N/A", f"{note}; would be {verdict}"
        out.append({"target": name, "measured": measured, "result": verdict, "note": note})

    calls = cases.get("calls", {})
    for era in ERAS:
        row = calls.get(f"{era} c1 raw")
        if row:
            add(
                f"call overhead p50 ratio, c=1, {era} (<= 1.3)",
                _x(row["ratioP50"]),
                row["ratioP50"] <= 1.3,
            )
        row = calls.get(f"{era} c32 raw")
        if row:
            add(
                f"throughput ratio, c=32, {era} (>= 0.8)",
                _x(row["throughputRatio"]),
                row["throughputRatio"] >= 0.8,
            )
        row = calls.get(f"{era} c1 sdk")
        if row:
            add(
                f"call overhead p50 ratio, c=1, SDK Client, {era} (<= 1.3)",
                _x(row["ratioP50"]),
                row["ratioP50"] <= 1.3,
            )
    federated = cases.get("federation", {})
    for era in ERAS:
        row = federated.get(f"{era} c1")
        if row:
            add(
                f"federated call p50 ratio vs the upstream directly, c=1, {era} (<= 1.3)",
                _x(row["ratioP50"]),
                row["ratioP50"] <= 1.3,
            )
    large = cases.get("large", {})
    quick = results["mode"] == "quick"
    tools = large.get("setup", {}).get("tools", 0)
    note = f"quick mode: {tools:,} tools, not 10,000" if quick else ""
    for era in ERAS:
        listing = large.get("listing", {}).get(era)
        if listing:
            treadle = listing["treadle"]
            add(
                f"every page answers, {era}",
                str(treadle["everyPageAnswered"]),
                treadle["everyPageAnswered"],
                note,
            )
            server = treadle["cachedServerMs"]["p50"]
            add(
                f"full cached listing server-side, {era} (<= 100 ms)",
                f"{_ms(server)} ms",
                server <= 100,
                note,
            )
        row = large.get("calls", {}).get(era)
        if row:
            ratio = row["treadleLargeOverOne"]
            add(f"tools/call p50 large vs 1 tool, {era} (<= 1.2x)", _x(ratio), ratio <= 1.2, note)
    resync = cases.get("resync", {}).get("treadle")
    if resync:
        p99 = (resync.get("fromCommitMs") or {}).get("p99", math.nan)
        missed = resync["missed"]
        add(
            f"resync p99 commit->receipt, {resync['clients']} clients (<= 250 ms)",
            f"{_ms(p99)} ms" + (f", {missed} missed" if missed else ""),
            p99 <= 250 and not missed,
        )
    row = cases.get("rest", {}).get("c32")
    if row:
        add(
            "REST execute throughput ratio, c=32, vs bare Starlette (>= 0.8)",
            _x(row["throughputRatio"]),
            row["throughputRatio"] >= 0.8,
        )
    replicas = cases.get("replicas", {})
    if "throughput" in replicas:
        ratio = replicas["throughput"]["throughputRatio"]
        add("2 replicas vs 1 on PostgreSQL, calls/s at c=32 (>= 1.5x)", _x(ratio), ratio >= 1.5)
    for era, row in replicas.get("latency", {}).items():
        add(
            f"PostgreSQL vs SQLite tools/call p50, c=1, {era} (<= 1.3x)",
            _x(row["ratioP50"]),
            row["ratioP50"] <= 1.3,
        )
    across = replicas.get("resync")
    if across:
        p99 = (across.get("fromCommitMs") or {}).get("p99", math.nan)
        missed = across["missed"]
        add(
            f"resync across replicas p99, {across['clients']} clients on B (<= 250 ms)",
            f"{_ms(p99)} ms" + (f", {missed} missed" if missed else ""),
            p99 <= 250 and not missed,
        )
    return out


_CPU_KINDS = ("treadle", "postgresql", "client")


def _floor(found: dict[str, Any], era: str) -> float | None:
    """The PostgreSQL / SQLite c=1 ratio if treadle's own work cost the same on both: SQLite's
    p50 with its store path swapped for PostgreSQL's two statements alone."""
    store = found.get("store")
    row = found.get("latency", {}).get(era)
    if not store or not row:
        return None
    sqlite = row["sides"]["sqlite"]["p50"]
    floor: float = (sqlite - store["sqlite"]["p50"] + store["postgresqlRaw"]["p50"]) / sqlite
    return floor


def _cpu_ceiling(throughput: dict[str, Any]) -> str:
    """The best 2-replica / 1-replica ratio these CPU costs allow on this machine: one
    replica is one event loop, at most one core (1,000 ms of CPU a second) of its own CPU per
    call; two replicas, their database and the load share every core."""
    sides = list(throughput["sides"].values())
    costs = [side.get("cpuMsPerCall", {}) for side in sides]
    cores = throughput.get("cores")
    if len(costs) != 2 or not all(costs) or not cores:
        return ""
    one = 1000 / costs[0]["treadle"]
    two = cores * 1000 / sum(costs[1].get(kind, 0.0) for kind in _CPU_KINDS)
    return (
        f"\n\nCPU ceiling of the 2-replica ratio on {cores} cores: {cores * 1000:.0f} / "
        f"({' + '.join(f'{costs[1].get(k, 0.0):.2f}' for k in _CPU_KINDS)}) calls/s against "
        f"1000 / {costs[0]['treadle']:.2f} for one replica = {_x(min(two, 2 * one) / one)}."
    )


def _served_floor(found: dict[str, Any], era: str) -> float | None:
    """The same ratio with PostgreSQL's extra cost as a bare server pays it over HTTP: the
    p50 of `bench.store_server` on PostgreSQL minus its p50 on SQLite, added to SQLite's."""
    served = found.get("storeServed")
    row = found.get("latency", {}).get(era)
    if not served or not row:
        return None
    sqlite = row["sides"]["sqlite"]["p50"]
    floor: float = (sqlite + served["postgresqlMinusSqliteMs"]) / sqlite
    return floor


def _floors(found: dict[str, Any], floor: Callable[[dict[str, Any], str], float | None]) -> str:
    """`floor` of each era the run measured, as "era 1.23x, ..."."""
    return ", ".join(
        f"{era} {_x(value)}"
        for era in found.get("latency", {})
        if (value := floor(found, era)) is not None
    )


def _store_served(found: dict[str, Any]) -> str:
    served = found.get("storeServed")
    if not served:
        return ""
    treadle = ", ".join(
        f"{era} {row['sides']['postgresql']['p50'] - row['sides']['sqlite']['p50']:.2f} ms"
        for era, row in found.get("latency", {}).items()
    )
    floors = _floors(found, _served_floor)
    return (
        " Served by a bare uvicorn app that does only that store work per request "
        "(bench/store_server.py, c=1 over HTTP like the calls above): p50 SQLite "
        f"{served['sqlite']['p50']:.2f} ms, PostgreSQL {served['postgresql']['p50']:.2f} ms, "
        f"so PostgreSQL costs a bare server {served['postgresqlMinusSqliteMs']:.2f} ms a "
        f"request; treadle's own PostgreSQL - SQLite p50: {treadle}. Floor of the ratio with "
        f"the bare server's difference: {floors}."
    )


def _store_floor(found: dict[str, Any]) -> str:
    store = found.get("store")
    if not store:
        return ""
    floors = _floors(found, _floor)
    return (
        "\n\nThe store alone per call (c=1, in the bench process, alternating blocks; "
        "bench/store_floor.py): SQLite's reservation and record "
        f"{store['sqlite']['p50'] * 1e3:.0f} µs; PostgreSQL's admission statement and "
        f"record {store['postgresql']['p50'] * 1e3:.0f} µs, of which the two statements "
        f"straight through asyncpg take {store['postgresqlRaw']['p50'] * 1e3:.0f} µs. "
        f"Floor of the PostgreSQL / SQLite c=1 ratio (SQLite's p50 with its store path "
        f"swapped for PostgreSQL's raw statements): {floors}." + _store_served(found)
    )


def _replicas(found: dict[str, Any]) -> str:
    rows = []
    throughput = found["throughput"]
    for label, side in throughput["sides"].items():
        rows.append(
            [
                f"{label}, c=32, {throughput['era']}",
                f"{_ms(side['p50'])} / {_ms(side['p99'])}",
                f"{side['perSecond']:.0f}",
                str(side["errors"]),
            ]
        )
    cpu_rows = [
        [label, *(f"{side['cpuMsPerCall'].get(k, math.nan):.2f}" for k in _CPU_KINDS)]
        for label, side in throughput["sides"].items()
        if "cpuMsPerCall" in side
    ]
    for era, row in found["latency"].items():
        for label, side in row["sides"].items():
            rows.append(
                [
                    f"{label}, c=1, {era}",
                    f"{_ms(side['p50'])} / {_ms(side['p99'])}",
                    f"{side['perSecond']:.0f}",
                    str(side["errors"]),
                ]
            )
    across = found["resync"]
    commit = across.get("fromCommitMs") or {}
    client = f"load from {throughput.get('client', 'python')}"
    if found.get("niceness") is not None:
        client += f", case processes at niceness {found['niceness']}"
    cpu = (
        "\n\nCPU per call at c=32 (ms; 2 cores = 2000 ms of CPU per second):\n\n"
        + _table(["deployment", *_CPU_KINDS], cpu_rows)
        + _cpu_ceiling(throughput)
        if cpu_rows
        else ""
    )
    return (
        f"### 7. Replicas on PostgreSQL ({client})\n\n"
        + _table(["deployment, load", "p50 / p99 ms", "calls/s", "errors"], rows)
        + _store_floor(found)
        + cpu
        + f"\n\nResync across replicas (change through A, {across['clients']} clients on B, "
        f"{across['rounds']} rounds): from commit p50 / p99 {_ms(commit.get('p50'))} / "
        f"{_ms(commit.get('p99'))} ms, missed {across['missed']}; 2 replicas / 1: "
        f"{_x(found['throughput']['throughputRatio'])}."
    )


def render(results: dict[str, Any]) -> str:
    parts: list[str] = []
    m = results["machine"]
    parts.append(
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memoryGiB']} GiB, Python {m['python']}, "
        f"mcp {m['mcp']}, uvicorn {m['uvicorn']}; mode {results['mode']}; "
        f"started {results['startedAt']}; load average at start {m['loadavgAtStart'][0]:.2f}"
    )
    source = results.get("source")
    if source:
        parts[-1] += (
            f"; treadle at {source['head']} + {source['uncommittedFiles']} uncommitted files"
        )
    cases = results["cases"]
    if "calls" in cases and "error" not in cases["calls"]:
        rows = []
        for label, row in cases["calls"].items():
            errors = row["treadle"]["errors"] + row["bare"]["errors"]
            rows.append([*_versus(label, row), str(errors)])
        parts.append(
            "### 1. tools/call overhead (treadle / bare SDK)\n\n"
            + _table(
                [
                    "era, concurrency, client",
                    "treadle p50 / p99 ms",
                    "bare p50 / p99 ms",
                    "p50 ratio",
                    "server-side p50 ms T / B",
                    "calls/s treadle / bare",
                    "throughput ratio",
                    "server CPU ms/call T / B",
                    "errors",
                ],
                rows,
            )
        )
    large = cases.get("large")
    if large and "error" not in large:
        rows = []
        for era in ERAS:
            listing = large["listing"][era]
            t, b = listing["treadle"], listing["bare"]
            rows.append(
                [
                    era,
                    f"{_ms(t['coldMs']['p50'])} ({_ms(t['coldServerMs']['p50'])})",
                    f"{_ms(t['cachedMs']['p50'])} ({_ms(t['cachedServerMs']['p50'])})",
                    f"{t['pageBytes']['n']} x {t['pageBytes']['p50'] / 1024:.1f} KiB",
                    str(t["everyPageAnswered"]),
                    f"{_ms(b['ms']['p50'])} ({_ms(b['serverMs']['p50'])})",
                    f"{b['pageBytes']['p50'] / 1024:.0f} KiB",
                ]
            )
        parts.append(
            f"### 2. Large workspace: {large['setup']['tools']:,} tools "
            f"({large['setup']['aliases']} aliases x 25)\n\nListing every page, client ms "
            "(server-side ms):\n\n"
            + _table(
                [
                    "era",
                    "treadle cold",
                    "treadle cached",
                    "pages x median size",
                    "every page answered",
                    "bare (one page)",
                    "bare page size",
                ],
                rows,
            )
        )
        rows = []
        for era in ERAS:
            s = large["sdkListing"][era]
            rows.append([era] + [_sdk_listing(s[side]) for side in ("treadle", "bare")])
        parts.append(
            "Listing through the SDK `Client`:\n\n" + _table(["era", "treadle", "bare"], rows)
        )
        rows = []
        for era in ERAS:
            c = large["calls"][era]
            rows.append(
                [
                    era,
                    f"{_ms(c['treadle-large']['p50'])} / {_ms(c['treadle-large']['p99'])}",
                    f"{_ms(c['treadle-one']['p50'])} / {_ms(c['treadle-one']['p99'])}",
                    _x(c["treadleLargeOverOne"]),
                    f"{_server(c['treadle-large'])} / {_server(c['treadle-one'])}",
                    f"{c['treadle-large']['serverCpuMsPerCall']:.2f} / "
                    f"{c['treadle-one']['serverCpuMsPerCall']:.2f}",
                    f"{_ms(c['bare-large']['p50'])} / {_ms(c['bare-large']['p99'])}",
                    f"{_ms(c['bare-one']['p50'])} / {_ms(c['bare-one']['p99'])}",
                    _x(c["bareLargeOverOne"]),
                ]
            )
        parts.append(
            "tools/call at concurrency 1 (raw), p50 / p99 ms:\n\n"
            + _table(
                [
                    "era",
                    "treadle large",
                    "treadle 1 tool",
                    "p50 ratio",
                    "treadle server-side p50 large / 1",
                    "treadle CPU ms/call large / 1",
                    "bare large",
                    "bare 1 tool",
                    "p50 ratio",
                ],
                rows,
            )
        )
        rows = []
        for label, row in large["sdkCalls"].items():
            rows.append(
                [label]
                + [
                    (
                        f"{_ms(row[s]['p50'])} / {_ms(row[s]['p99'])}"
                        + (f" ({row[s]['errors']} errors)" if row[s].get("errors") else "")
                        if "error" not in row[s]
                        else f"FAILED: {row[s]['error']}"
                    )
                    for s in ("treadle-large", "bare-large")
                ]
            )
        parts.append(
            "tools/call through the SDK `Client`, large workspaces, p50 / p99 ms:\n\n"
            + _table(["client state", "treadle", "bare"], rows)
        )
        rows = [
            [
                label,
                f"{c['tools']:,}",
                f"{c['bytes']:,}",
                f"{c['approxTokens']:,}",
                f"{c['bytesPerTool']:.0f}",
                f"{c['descriptionBytes']:,}",
            ]
            for label, c in large["context"].items()
        ]
        parts.append(
            "### 6. Context size of the full tool list\n\n"
            + _table(
                [
                    "server, era",
                    "tools",
                    "bytes (compact JSON)",
                    "~ tokens (bytes/4)",
                    "bytes/tool",
                    "description bytes",
                ],
                rows,
            )
        )
    resync = cases.get("resync")
    if resync and "error" not in resync:
        rows = []
        for side in ("treadle", "bare"):
            r = resync[side]
            commit = r.get("fromCommitMs")
            rows.append(
                [
                    f"{side} (all {r['clients']})",
                    f"{_ms(commit['p50'])} / {_ms(commit['p99'])}" if commit else "-",
                    f"{_ms(r['fromRequestMs']['p50'])} / {_ms(r['fromRequestMs']['p99'])}",
                    str(r["missed"]),
                ]
            )
            for kind, s in r["byTransportFromRequest"].items():
                c = r["byTransportFromCommit"].get(kind)
                rows.append(
                    [
                        f"  {side}: {kind} ({s['n'] // r['rounds']})",
                        f"{_ms(c['p50'])} / {_ms(c['p99'])}" if c else "-",
                        f"{_ms(s['p50'])} / {_ms(s['p99'])}",
                        "",
                    ]
                )
        parts.append(
            f"### 3. Resync: change -> list_changed, {resync['treadle']['rounds']} rounds\n\n"
            + _table(
                ["clients", "from commit p50 / p99 ms", "from REST request p50 / p99 ms", "missed"],
                rows,
            )
        )
    rest = cases.get("rest")
    if rest and "error" not in rest:
        rows = []
        for label, row in rest.items():
            rows.append(_versus(label, row))
        parts.append(
            "### 4. REST execute (treadle) vs a bare Starlette JSON route\n\n"
            + _table(
                [
                    "concurrency",
                    "treadle p50 / p99 ms",
                    "bare p50 / p99 ms",
                    "p50 ratio",
                    "server-side p50 ms T / B",
                    "req/s treadle / bare",
                    "throughput ratio",
                    "server CPU ms/req T / B",
                ],
                rows,
            )
        )
    memory = cases.get("memory")
    if memory and "error" not in memory:
        rows = []
        for kind, pair in memory.items():
            for side in ("treadle", "bare"):
                r = pair[side]
                rows.append(
                    [
                        f"{kind}: {side}",
                        f"{r['connections']}/{r['requested']}",
                        f"{r['rssIdleMiB']}",
                        f"{r['rssLoadedMiB']}",
                        f"{r['deltaMiB']}",
                        f"{r['kibPerConnection']}",
                    ]
                )
        parts.append(
            "### 5. Memory (RSS of the server process)\n\n"
            + _table(
                ["connections", "open", "idle MiB", "loaded MiB", "delta MiB", "KiB/connection"],
                rows,
            )
        )
    replicas = cases.get("replicas")
    if replicas and "error" not in replicas:
        parts.append(_replicas(replicas))
    for name, case in cases.items():
        if "error" in case:
            parts.append(f"Case {name} FAILED: {case['error']}")
    noise = results.get("noise", {})
    if noise:
        parts.append(
            "Other processes' share of the 2 cores while each case ran: "
            + ", ".join(f"{name} {n['otherCpuShare']:.0%}" for name, n in noise.items())
        )
    rows = [
        [t["target"], t["measured"], t["result"] + (f" ({t['note']})" if t["note"] else "")]
        for t in results.get("targets", [])
    ]
    parts.append("### Targets\n\n" + _table(["target", "measured", "result"], rows))
    return "\n\n".join(parts)
