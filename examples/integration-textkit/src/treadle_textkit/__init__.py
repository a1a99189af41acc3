"""`textkit`: an example treadle integration (see docs/integrations.md in treadle).

One action, `count_words`, with an input schema that treadle validates before `run` is
called, an output schema MCP clients see, and annotations saying it only reads.
"""

from __future__ import annotations

import re
from typing import Any

from treadle.catalog.model import (
    Action,
    ActionAnnotations,
    ActionContext,
    AuthKind,
    Integration,
)
from treadle.errors import ActionRuntimeError

MAX_TEXT = 100_000

COUNT_WORDS_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {
            "type": "string",
            "maxLength": MAX_TEXT,
            "description": "The text to count the words of.",
        },
        "top": {
            "type": "integer",
            "minimum": 0,
            "maximum": 50,
            "default": 3,
            "description": "How many of the most frequent words to list.",
        },
    },
    "required": ["text"],
    "additionalProperties": False,
}

COUNT_WORDS_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "words": {"type": "integer"},
        "characters": {"type": "integer"},
        "mostFrequent": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"word": {"type": "string"}, "count": {"type": "integer"}},
                "required": ["word", "count"],
            },
        },
    },
    "required": ["words", "characters", "mostFrequent"],
}

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


async def count_words(_ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    # `data` already matches COUNT_WORDS_INPUT: treadle validated it (and merged partials).
    text: str = data["text"]
    top: int = data.get("top", 3)
    words = [word.lower() for word in _WORD.findall(text)]
    if not words and text.strip():
        # A failure the caller can act on: becomes ACTION_FAILED (REST) or an isError result.
        raise ActionRuntimeError("The text has no words in it", reason="no_words")
    counts: dict[str, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {
        "words": len(words),
        "characters": len(text),
        "mostFrequent": [{"word": word, "count": count} for word, count in ranked],
    }


integration = Integration(
    name="textkit",
    display_name="Text kit",
    description="Text statistics: counts words, finds the most frequent ones.",
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            name="count_words",
            display_name="Count words",
            description="Count the words of a text and list the most frequent ones.",
            input_schema=COUNT_WORDS_INPUT,
            output_schema=COUNT_WORDS_OUTPUT,
            run=count_words,
            annotations=ActionAnnotations(
                read_only=True, destructive=False, idempotent=True, open_world=False
            ),
        ),
    ),
)
