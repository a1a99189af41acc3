"""DISCOVERY mode: what the three meta-tools answer (the MCP face calls in here).

Everything is read from the server's full tool set at the request's configuration snapshot,
the one TOOLS mode would list: search sees only listed tools (never one that `allowedActions`
or an override hides), `describe_tools` returns the listed definition itself, and
`call_tool` hands the same target to the face's one call path as a direct call does.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from mcp.types import CallToolResult, InputRequiredResult, TextContent
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from treadle.errors import ErrorCode
from treadle.mcp import semantic
from treadle.mcp.discovery_tools import (
    CALL_TOOL,
    DEFAULT_LIMIT,
    DESCRIBE_TOOLS,
    MAX_DESCRIBE,
    MAX_LIMIT,
    MAX_QUERY,
    SEARCH_TOOLS,
)
from treadle.mcp.results import error_result
from treadle.mcp.search_index import Hit, LexicalIndex
from treadle.mcp.toolset import ToolSet, ToolTarget

log = logging.getLogger(__name__)

# Indexes kept, one per server in use (as tool sets are; an evicted one is rebuilt).
MAX_INDEXES = 256
RRF_K = 60.0
# How deep each ranking is read before fusing them.
FUSE_DEPTH = 200
# A first index of more tools than this is built in a worker thread.
BUILD_IN_THREAD = 500

Run = Callable[[ToolTarget, dict[str, Any]], Awaitable[CallToolResult | InputRequiredResult]]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchArgs(_Args):
    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY)]
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    integration: Annotated[str, StringConstraints(max_length=200)] | None = None


class DescribeArgs(_Args):
    names: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]],
        Field(min_length=1, max_length=MAX_DESCRIBE),
    ]


class CallArgs(_Args):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    arguments: dict[str, Any] = Field(default_factory=dict)


@dataclass(slots=True)
class ToolSearch:
    """One server's search: the lexical index and, with the semantic extra, its vectors."""

    lexical: LexicalIndex
    vectors: semantic.VectorIndex | None
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def sync(self, full: ToolSet) -> None:
        async with self.lock:
            await self._sync(full)

    async def _sync(self, full: ToolSet) -> None:
        if full is self.lexical.source:
            pass
        elif len(self.lexical) == 0 and len(full.tools) > BUILD_IN_THREAD:
            # A first build of thousands of tools takes seconds: off the event loop (no
            # search reads this index until it is built: they wait on the lock).
            await anyio.to_thread.run_sync(self.lexical.sync, full)
        else:
            self.lexical.sync(full)
        vectors = self.vectors
        if vectors is not None and not vectors.current(self.lexical):
            # Embedding new meanings takes a while (seconds for hundreds of new actions):
            # not on the event loop.
            meanings, source = dict(self.lexical.meanings), self.lexical.source
            await anyio.to_thread.run_sync(vectors.sync, meanings, source)

    def search(
        self, query: str, limit: int, scope: str | None = None, ranking: str | None = None
    ) -> tuple[list[Hit], int]:
        """The best `limit` hits and how many tools matched at all."""
        allowed = self.lexical.matching(scope) if scope else None
        lexical = self.lexical.scores(query, allowed)
        ranking = ranking or ("hybrid" if self.vectors is not None else "lexical")
        if ranking == "lexical" or self.vectors is None:
            return self._hits(_best(lexical, limit)), len(lexical)
        similar = self.vectors.scores(query, allowed)
        if ranking == "semantic":
            return self._hits(_best(similar, limit)), len(similar)
        fused = _fuse(lexical, similar)
        return self._hits(_best(fused, limit)), len(fused)

    def _hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        entries = self.lexical.entries
        return [Hit(entries[doc], score) for doc, score in ranked]


def _best(scores: dict[int, float], limit: int) -> list[tuple[int, float]]:
    """The `limit` best, ties in index order (stable); not a sort of 10,000 scores."""
    return heapq.nsmallest(limit, scores.items(), key=lambda item: (-item[1], item[0]))


def _ranks(scores: dict[int, float]) -> dict[int, int]:
    """Dense ranks of the best documents, down to FUSE_DEPTH distinct scores: equal scores
    share a rank (a hundred aliases of one action are equally close in meaning; the words of
    the query tell them apart)."""
    ranks: dict[int, int] = {}
    rank, previous = 0, None
    for doc, score in sorted(scores.items(), key=lambda item: -item[1]):
        if score != previous:
            rank += 1
            previous = score
            if rank > FUSE_DEPTH:
                break
        ranks[doc] = rank
    return ranks


def _fuse(lexical: dict[int, float], similar: dict[int, float]) -> dict[int, float]:
    """Reciprocal rank fusion: robust to the two scores' different scales."""
    fused: dict[int, float] = {}
    for ranks in (_ranks(lexical), _ranks(similar)):
        for doc, rank in ranks.items():
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (RRF_K + rank)
    return fused


class SearchIndexes:
    """Each server's search, kept in step with its tool set (cached per server and
    configuration version: a search at a new version updates the index incrementally)."""

    def __init__(self, ranking: str = "lexical", max_entries: int = MAX_INDEXES) -> None:
        # lexical | hybrid | semantic; the latter two need the semantic extra (else lexical).
        if ranking != "lexical" and semantic.encoder() is None:
            log.warning(
                "tool search %s needs the semantic extra (pip install 'treadle[semantic]'); "
                "searching lexically",
                ranking,
            )
            ranking = "lexical"
        self.ranking = ranking
        self._max = max_entries
        self._entries: OrderedDict[str, ToolSearch] = OrderedDict()

    async def for_set(self, cache_key: str, full: ToolSet) -> ToolSearch:
        found = self._entries.get(cache_key)
        if found is None:
            vectors = semantic.VectorIndex.create() if self.ranking != "lexical" else None
            found = ToolSearch(LexicalIndex(), vectors)
            self._entries[cache_key] = found
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(cache_key)
        await found.sync(full)
        return found


def _invalid(error: ValidationError) -> CallToolResult:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "arguments"
    return error_result(
        ErrorCode.VALIDATION_ERROR,
        f"{where}: {first['msg']}",
        {"field": where},
        declares_output=True,
    )


def _structured(value: dict[str, Any], text: str | None = None) -> CallToolResult:
    """`text`: what a model that reads only text gets (default: the JSON itself)."""
    if text is None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=value)


def _hit_lines(hits: list[Hit], total: int) -> str:
    # One line per tool, not the JSON again: the same facts in half the bytes.
    lines = [f"{hit.entry.name}: {hit.entry.description}" for hit in hits]
    more = f"{len(hits)} of {total} matching tools" if hits else "No tool matches; try other words."
    return "\n".join([more, *lines])


def _unknown(name: str) -> dict[str, str]:
    return {
        "name": name[:200],
        "error": ErrorCode.NOT_FOUND.value,
        "message": "No such tool on this server; use search_tools to find one.",
    }


def listed_target(full: ToolSet, name: str) -> ToolTarget | None:
    """A tool the server lists (hidden and disallowed ones are not there for discovery)."""
    target = full.targets.get(name)
    return target if target is not None and target.listed else None


async def answer(
    indexes: SearchIndexes,
    cache_key: str,
    full: ToolSet,
    name: str,
    arguments: dict[str, Any],
    run: Run,
) -> CallToolResult | InputRequiredResult:
    """The result of the meta-tool `name` (one of META_NAMES)."""
    try:
        if name == SEARCH_TOOLS:
            search = SearchArgs.model_validate(arguments)
            index = await indexes.for_set(cache_key, full)
            hits, total = index.search(
                search.query, search.limit, search.integration, indexes.ranking
            )
            return _structured(
                {"tools": [hit.entry.to_json(hit.score) for hit in hits], "total": total},
                _hit_lines(hits, total),
            )
        if name == DESCRIBE_TOOLS:
            describe = DescribeArgs.model_validate(arguments)
            tools: list[dict[str, Any]] = []
            missing: list[dict[str, str]] = []
            for wanted in dict.fromkeys(describe.names):
                tool = full.by_name.get(wanted) if listed_target(full, wanted) else None
                if tool is None:
                    missing.append(_unknown(wanted))
                else:
                    tools.append(tool.model_dump(mode="json", by_alias=True, exclude_none=True))
            return _structured({"tools": tools, "notFound": missing})
        assert name == CALL_TOOL
        call = CallArgs.model_validate(arguments)
    except ValidationError as error:
        return _invalid(error)
    target = listed_target(full, call.name)
    if target is None:
        unknown = _unknown(call.name)
        return error_result(ErrorCode.NOT_FOUND, unknown["message"], {"name": unknown["name"]})
    return await run(target, call.arguments)
