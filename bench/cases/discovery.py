"""Discovery: search quality, speed and bytes of DISCOVERY mode at 10,000 tools.

    python -m bench.cases.discovery [--quick] [--no-semantic]

In one process (the search is the thing measured, not HTTP): the workspace of
bench/discovery_workspace.py on a temporary SQLite database, a TOOLS and a DISCOVERY server
over it, SDK clients in memory. Reported:

- quality over bench/data/discovery_queries.txt: recall@1, recall@5 and MRR (first listed
  tool that solves the task, within the top 50) for lexical, semantic and hybrid ranking
  (semantic and hybrid need the `semantic` extra);
- `search_tools` latency, p50/p99: the index alone, and the whole call through the SDK client;
- bytes: the full tools/list (TOOLS mode), the DISCOVERY-mode tools/list, a limit-10
  `search_tools` result (what a host puts in the model's context: the result's JSON);
- the cold index build, and one alias added: how many tools were re-indexed and how long the
  next search took.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from statistics import quantiles
from typing import Any

import anyio
from mcp import Client

from bench.discovery_workspace import aliases, synthetic_integrations
from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.catalog import load_catalog
from treadle.mcp import semantic
from treadle.mcp.binds import bind_server
from treadle.mcp.discovery import ToolSearch
from treadle.mcp.runtime import McpRuntime
from treadle.mcp.search_index import LexicalIndex
from treadle.settings import Settings, sqlite_url
from treadle.store.records import ConnectionStrategy

QUERIES = Path(__file__).resolve().parent.parent / "data" / "discovery_queries.txt"
DEPTH = 50


def load_queries() -> list[tuple[str, set[str]]]:
    found = []
    for line in QUERIES.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        query, _, tools = line.partition("|")
        found.append((query.strip(), set(tools.split())))
    return found


def _wire(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _ms(samples: list[float]) -> dict[str, float]:
    cuts = quantiles(samples, n=100, method="inclusive")
    return {"p50": round(cuts[49] * 1000, 2), "p99": round(cuts[98] * 1000, 2)}


def quality(
    search: ToolSearch, queries: list[tuple[str, set[str]]], ranking: str
) -> dict[str, Any]:
    at1 = at5 = 0
    reciprocal = 0.0
    misses: list[str] = []
    for query, expected in queries:
        hits, _ = search.search(query, DEPTH, ranking=ranking)
        names = [hit.entry.name for hit in hits]
        rank = next((i + 1 for i, name in enumerate(names) if name in expected), None)
        if rank is not None:
            reciprocal += 1.0 / rank
            at1 += rank == 1
            at5 += rank <= 5
        if rank is None or rank > 5:
            misses.append(f"{query} -> {names[:3]}")
    count = len(queries)
    return {
        "recallAt1": round(at1 / count, 3),
        "recallAt5": round(at5 / count, 3),
        "mrr": round(reciprocal / count, 3),
        "missesAt5": misses[:20],
    }


async def build(data_dir: Path) -> tuple[Gateway, str, str, str, str]:
    catalog = load_catalog()
    for extra in synthetic_integrations():
        catalog.add(extra)
    settings = Settings(
        data_dir=data_dir, database_url=sqlite_url(data_dir / "bench.db"), secret_key=None
    )
    gateway = await Gateway.open(settings, catalog=catalog)
    init = await initialise(gateway.store, data_dir)
    store = gateway.store
    async with store.db.write("bench") as txn:
        workspace = await store.workspaces.create(txn, init.org_id, "discovery")
        for integration, alias in aliases():
            await store.integrations.create(
                txn,
                org_id=init.org_id,
                workspace_id=workspace.id,
                integration_name=integration,
                alias=alias,
                strategy=ConnectionStrategy.FIXED,
                connection_id=None,
                allowed_actions=None,
                settings={"persistence": {"scope": "workspace"}}
                if integration == "kv-store"
                else {},
            )
        servers = []
        for mode in ("TOOLS", "DISCOVERY"):
            server, _token = await store.mcp_servers.create(
                txn,
                org_id=init.org_id,
                workspace_id=workspace.id,
                name=mode.lower(),
                mode=mode,
                end_user_id=None,
                tool_overrides=(),
            )
            servers.append(server.id)
    return gateway, init.org_id, workspace.id, servers[0], servers[1]


async def run(quick: bool = False, with_semantic: bool = True) -> dict[str, Any]:
    queries = load_queries()
    results: dict[str, Any] = {"queries": len(queries)}
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        gateway, org_id, workspace_id, tools_id, discovery_id = await build(Path(tmp))
        results["setupSeconds"] = round(time.perf_counter() - began, 1)
        try:
            runtime = McpRuntime(gateway)
            tools_face = runtime.bound_face(await bind_server(gateway.store, tools_id, None))
            binding = await bind_server(gateway.store, discovery_id, None)
            discovery_face = runtime.bound_face(binding)

            async with Client(tools_face.server, mode="legacy") as client:
                listed = (await client.list_tools()).tools
                cursor = None
                full_tools = []
                while True:
                    page = await client.list_tools(cursor=cursor)
                    full_tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
            full_bytes = sum(
                _wire(t.model_dump(mode="json", by_alias=True, exclude_none=True))
                for t in full_tools
            )
            results["tools"] = len(full_tools)
            del listed

            full = (await runtime.toolsets.current(binding)).toolset.full
            assert full is not None
            assert len(full.tools) == results["tools"]
            began = time.perf_counter()
            lexical = LexicalIndex()
            lexical.sync(full)
            results["lexicalIndexBuildMs"] = round((time.perf_counter() - began) * 1000, 1)

            search = ToolSearch(lexical, None)
            rankings: dict[str, Any] = {"lexical": quality(search, queries, "lexical")}
            vectors = semantic.VectorIndex.create() if with_semantic else None
            if vectors is not None:
                began = time.perf_counter()
                await ToolSearch(lexical, vectors).sync(full)
                results["semanticIndexBuildSeconds"] = round(time.perf_counter() - began, 1)
                results["distinctMeanings"] = len(set(lexical.meanings.values()))
                both = ToolSearch(lexical, vectors)
                rankings["semantic"] = quality(both, queries, "semantic")
                rankings["hybrid"] = quality(both, queries, "hybrid")
                began_q = [time.perf_counter()]
                timings = []
                for query, _ in queries:
                    began_q = [time.perf_counter()]
                    both.search(query, 10, ranking="hybrid")
                    timings.append(time.perf_counter() - began_q[0])
                results["hybridSearchMs"] = _ms(timings)
            else:
                rankings["semantic"] = rankings["hybrid"] = "semantic extra not installed"
            results["ranking"] = rankings

            timings = []
            rounds = 1 if quick else 5
            for _ in range(rounds):
                for query, _ in queries:
                    began = time.perf_counter()
                    search.search(query, 10)
                    timings.append(time.perf_counter() - began)
            results["lexicalSearchMs"] = _ms(timings)

            async with Client(discovery_face.server, mode="legacy") as client:
                meta = (await client.list_tools()).tools
                discovery_bytes = sum(
                    _wire(t.model_dump(mode="json", by_alias=True, exclude_none=True)) for t in meta
                )
                answer_bytes = []
                timings = []
                await client.call_tool("search_tools", {"query": "warm up"})
                for _ in range(1 if quick else 3):
                    for query, _ in queries:
                        began = time.perf_counter()
                        result = await client.call_tool(
                            "search_tools", {"query": query, "limit": 10}
                        )
                        timings.append(time.perf_counter() - began)
                        answer_bytes.append(
                            _wire(result.model_dump(mode="json", by_alias=True, exclude_none=True))
                        )
                results["searchToolsCallMs"] = _ms(timings)

                # One alias more: only its tools are indexed again, and the next search has it.
                index = await runtime.search.for_set(binding.cache_key, full)
                before = index.lexical.updates
                async with gateway.store.db.write("bench") as txn:
                    await gateway.store.integrations.create(
                        txn,
                        org_id=org_id,
                        workspace_id=workspace_id,
                        integration_name="slack",
                        alias="newteam-slack",
                        strategy=ConnectionStrategy.FIXED,
                        connection_id=None,
                        allowed_actions=None,
                        settings={},
                    )
                began = time.perf_counter()
                found = await client.call_tool(
                    "search_tools", {"query": "post in a channel of the newteam slack", "limit": 3}
                )
                names = [t["name"] for t in (found.structured_content or {}).get("tools", [])]
                results["aliasAdded"] = {
                    "nextSearchMs": round((time.perf_counter() - began) * 1000, 1),
                    "toolsReindexed": index.lexical.updates - before,
                    "top3": names,
                    "foundAtOnce": "newteam_slack__send_channel_message" in names,
                }
            results["bytes"] = {
                "fullList": full_bytes,
                "discoveryList": discovery_bytes,
                "discoveryShareOfFull": round(discovery_bytes / full_bytes, 6),
                "search10": {
                    "p50": sorted(answer_bytes)[len(answer_bytes) // 2],
                    "max": max(answer_bytes),
                },
            }
        finally:
            await gateway.close()
    results["targets"] = {
        "recallAt5>=0.9 (lexical, the default)": results["ranking"]["lexical"]["recallAt5"] >= 0.9,
        "search p50<=20ms": results["searchToolsCallMs"]["p50"] <= 20,
        "discovery list<=0.1% of full": results["bytes"]["discoveryShareOfFull"] <= 0.001,
        "10-result search<=4KiB": results["bytes"]["search10"]["max"] <= 4096,
        "change seen on the next call": results["aliasAdded"]["foundAtOnce"],
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-semantic", action="store_true")
    args = parser.parse_args()
    found = anyio.run(run, args.quick, not args.no_semantic)
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
