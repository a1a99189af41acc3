"""Lexical search over one server's tools: BM25F over name, alias, integration, title,
description and parameters, kept up to date incrementally.

Tokens understand how tools are named: `google_sheets__append_row` and `appendRow` split into
words, words are reduced to a crude stem (rows → row, appending → append) and common synonyms
to one word (post → send, remove → delete, spreadsheet → sheet), on both sides, so "append a row
to a google sheet" meets `google_sheets__append_row`. Each field counts with a weight (a word
of the tool's name counts more than one of its description), the usual BM25 saturation and
length normalisation apply on the weighted counts.

An index follows a server's tool set: `sync` compares each listed tool's searchable text with
what the index holds and re-indexes only the tools that changed, so adding an alias touches
that alias's tools, not the other 10,000.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mcp.types import Tool

from treadle.mcp.toolset import ToolSet, ToolTarget

K1 = 1.2
B = 0.75
# Weight of one occurrence per field (BM25F): what names a tool says most about it.
W_NAME = 3.0
W_INTEGRATION = 2.0
W_TITLE = 2.0
W_DESCRIPTION = 1.0
W_PARAM_NAME = 1.0
W_PARAM_TEXT = 0.5

_STOP = frozenset(
    (
        "a",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "for",
        "from",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "some",
        "that",
        "the",
        "their",
        "them",
        "then",
        "this",
        "to",
        "up",
        "us",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "with",
        "you",
        "your",
    )
)
# After stemming: words that mean the same to someone asking for a tool.
_SYNONYMS = {
    "post": "send",
    "write": "send",
    "dm": "direct",
    "msg": "message",
    "remove": "delete",
    "erase": "delete",
    "drop": "delete",
    "fetch": "get",
    "retrieve": "get",
    "lookup": "search",
    "find": "search",
    "query": "search",
    "modify": "update",
    "edit": "update",
    "change": "update",
    "rename": "update",
    "append": "add",
    "insert": "add",
    "new": "create",
    "open": "create",
    "make": "create",
    "start": "create",
    "show": "list",
    "enumerate": "list",
    "repository": "repo",
    "pr": "pull",
    "ticket": "issue",
    "bug": "issue",
    "mail": "email",
    "e-mail": "email",
    "inbox": "email",
    "spreadsheet": "sheet",
    "worksheet": "sheet",
    "tab": "sheet",
    "emoji": "reaction",
    "react": "reaction",
    "answer": "reply",
    "respond": "reply",
    "store": "put",
    "save": "put",
    "set": "put",
    "recent": "history",
    "past": "history",
    "people": "user",
    "member": "user",
    "announce": "send",
    "notify": "send",
    "tell": "send",
    "assignee": "assign",
    "move": "update",
    "reschedule": "update",
    "resolve": "update",
    "close": "update",
    "subscribe": "subscriber",
}
# The best this many matches get a bonus for naming their action's words in full, of at most
# this share of the best score.
COVER_DEPTH = 200
COVER_BONUS = 0.25
# A search result's description: its first sentence, at most this long (describe_tools has
# the whole text); ten results stay within a few KiB of the model's context.
SUMMARY_CHARS = 90
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + keep
            # appending → append, but "sending" → "send", "listed" → "list"
            if keep == "" and len(word) > 3 and word[-1] == word[-2] and word[-1] not in "ls":
                word = word[:-1]
            return word
    if (word.endswith("es") and word[-3] in "sxz") or word.endswith(("ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=131_072)
def tokens(text: str) -> tuple[str, ...]:
    """Search words of a text (cached: thousands of tools share their descriptions)."""
    spaced = _CAMEL.sub(" ", text).lower()
    out: list[str] = []
    for word in _WORD.findall(spaced):
        if word in _STOP:
            continue
        stem = _stem(word)
        out.append(_SYNONYMS.get(stem, _SYNONYMS.get(word, stem)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a search result says about a tool (and what it is filtered by)."""

    name: str
    title: str
    description: str
    alias: str
    integration: str

    def to_json(self, score: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "integrationAlias": self.alias,
            "score": round(score, 3),
        }


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    score: float


def _signature(tool: Tool, alias: str, integration: str) -> tuple[Any, ...]:
    """Everything of a tool the index reads: equal signatures index the same."""
    properties = tool.input_schema.get("properties") or {}
    params = tuple(
        (key, value.get("description") if isinstance(value, dict) else None)
        for key, value in properties.items()
    )
    return (tool.title, tool.description, alias, integration, params)


def _weighted_terms(signature: tuple[Any, ...], name: str, display: str) -> dict[str, float]:
    title, description, alias, integration, params = signature
    counts: dict[str, float] = {}

    def add(words: Iterable[str], weight: float) -> None:
        for word in words:
            counts[word] = counts.get(word, 0.0) + weight

    add(tokens(name), W_NAME)
    add(tokens(f"{integration} {display}"), W_INTEGRATION)
    add(tokens(title or ""), W_TITLE)
    add(tokens(description or ""), W_DESCRIPTION)
    for key, text in params:
        add(tokens(key), W_PARAM_NAME)
        if isinstance(text, str):
            add(tokens(text), W_PARAM_TEXT)
    del alias  # its words are in the name (`{alias}__{action}`) or the override's name below
    return counts


def _summary(target: ToolTarget) -> str:
    """The action's own first sentence (the alias is its own field of a result)."""
    override = target.override.description if target.override is not None else None
    text = " ".join((override or target.action.description).split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    if len(first) <= SUMMARY_CHARS:
        return first
    return first[: SUMMARY_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _meaning(tool: Tool, target: ToolTarget, display: str) -> str:
    override = target.override.description if target.override is not None else None
    properties = tool.input_schema.get("properties") or {}
    params = ", ".join(key.replace("_", " ") for key in properties)
    text = f"{display}: {target.action.display_name}. {override or target.action.description}"
    return f"{text} Inputs: {params}." if params else text


class LexicalIndex:
    """BM25F over one server's listed tools, updated in place by `sync`."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}  # tool name -> doc id
        self._signatures: dict[int, tuple[Any, ...]] = {}
        self._terms: dict[int, dict[str, float]] = {}
        self._lengths: dict[int, float] = {}
        self.entries: dict[int, Entry] = {}
        # What each tool does, without the alias it acts on (what semantic ranking embeds).
        self.meanings: dict[int, str] = {}
        # The words of each tool's action name (create_issue: create, issue).
        self._action_words: dict[int, frozenset[str]] = {}
        self._postings: dict[str, dict[int, float]] = {}
        self._total_length = 0.0
        self._next_id = 0
        # The tool set last synced from (by identity: a tool set never changes).
        self.source: ToolSet | None = None
        self.updates = 0  # documents (re)indexed, over this index's life

    def __len__(self) -> int:
        return len(self._ids)

    def sync(self, toolset: ToolSet) -> None:
        """Index exactly the listed tools of `toolset`, touching only those that changed."""
        if toolset is self.source:
            return
        seen: set[str] = set()
        for tool in toolset.tools:
            target = toolset.targets.get(tool.name)
            if target is None:
                continue
            alias, integration = target.configured.alias, target.integration.name
            # The override's name can hide the alias: index the alias's words explicitly.
            name = tool.name if tool.name.startswith(alias) else f"{alias} {tool.name}"
            signature = _signature(tool, alias, integration)
            seen.add(tool.name)
            doc = self._ids.get(tool.name)
            if doc is not None and self._signatures[doc] == signature:
                continue
            if doc is not None:
                self._remove(tool.name)
            entry = Entry(tool.name, tool.title or "", _summary(target), alias, integration)
            display = target.integration.display_name
            terms = _weighted_terms(signature, name, display)
            self._add(entry, signature, terms, _meaning(tool, target, display))
            self._action_words[self._ids[tool.name]] = frozenset(tokens(target.action.name))
        for gone in [name for name in self._ids if name not in seen]:
            self._remove(gone)
        self.source = toolset

    def _add(
        self, entry: Entry, signature: tuple[Any, ...], terms: dict[str, float], meaning: str
    ) -> None:
        doc = self._next_id
        self.meanings[doc] = meaning
        self._next_id += 1
        self._ids[entry.name] = doc
        self._signatures[doc] = signature
        self._terms[doc] = terms
        self.entries[doc] = entry
        length = sum(terms.values())
        self._lengths[doc] = length
        self._total_length += length
        for term, weight in terms.items():
            self._postings.setdefault(term, {})[doc] = weight
        self.updates += 1

    def _remove(self, name: str) -> None:
        doc = self._ids.pop(name)
        for term in self._terms.pop(doc):
            posting = self._postings[term]
            del posting[doc]
            if not posting:
                del self._postings[term]
        self._total_length -= self._lengths.pop(doc)
        del self._signatures[doc]
        del self.entries[doc]
        del self.meanings[doc]
        self._action_words.pop(doc, None)

    def doc_id(self, name: str) -> int | None:
        return self._ids.get(name)

    def scores(self, query: str, allowed: set[int] | None = None) -> dict[int, float]:
        """BM25F score of every document matching any query word (restricted to `allowed`)."""
        count = len(self._ids)
        if not count:
            return {}
        average = self._total_length / count or 1.0
        lengths = self._lengths
        found: dict[int, float] = {}
        for term in dict.fromkeys(tokens(query)):
            posting = self._postings.get(term)
            if not posting:
                continue
            df = len(posting)
            idf = math.log(1.0 + (count - df + 0.5) / (df + 0.5))
            base = K1 * (1.0 - B)
            scale = K1 * B / average
            lift = idf * (K1 + 1.0)
            for doc, tf in posting.items():
                if allowed is not None and doc not in allowed:
                    continue
                found[doc] = found.get(doc, 0.0) + lift * tf / (tf + base + scale * lengths[doc])
        if found:
            self._cover(found, set(tokens(query)))
        return found

    def _cover(self, found: dict[int, float], asked: set[str]) -> None:
        """Among the best matches, prefer the tool whose action the query names whole: "open
        an issue" is create_issue more than create_issue_comment, though both match."""
        best = heapq.nlargest(COVER_DEPTH, found.items(), key=lambda item: item[1])
        if not best:
            return
        bonus = COVER_BONUS * best[0][1]
        for doc, score in best:
            words = self._action_words.get(doc)
            if words:
                found[doc] = score + bonus * len(words & asked) / len(words)

    def matching(self, scope: str) -> set[int]:
        """Documents of an alias or an integration (by name), case-insensitive."""
        wanted = scope.lower()
        return {
            doc
            for doc, entry in self.entries.items()
            if entry.alias.lower() == wanted or entry.integration.lower() == wanted
        }
