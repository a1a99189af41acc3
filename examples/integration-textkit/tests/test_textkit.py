"""The action on its own, without a gateway: `run` with a context and a validated input."""

from __future__ import annotations

import asyncio

import httpx2
import jsonschema
import pytest
from treadle_textkit import COUNT_WORDS_INPUT, COUNT_WORDS_OUTPUT, count_words, integration

from treadle.catalog.model import ActionContext
from treadle.errors import ActionRuntimeError


def run(data: dict[str, object]) -> dict[str, object]:
    jsonschema.validate(data, COUNT_WORDS_INPUT)  # what treadle checks before calling `run`

    async def call() -> dict[str, object]:
        async with httpx2.AsyncClient() as http:
            ctx = ActionContext(
                workspace_id="ws",
                integration_alias="textkit",
                action_name="count_words",
                end_user_id=None,
                connection=None,
                settings={},
                http=http,
            )
            return await count_words(ctx, data)

    return asyncio.run(call())


def test_words_are_counted_and_ranked() -> None:
    result = run({"text": "The cat and the hat. THE end!", "top": 2})
    jsonschema.validate(result, COUNT_WORDS_OUTPUT)
    assert result["words"] == 7
    assert result["mostFrequent"] == [{"word": "the", "count": 3}, {"word": "and", "count": 1}]


def test_an_input_the_schema_refuses_never_reaches_run() -> None:
    with pytest.raises(jsonschema.ValidationError):
        run({"text": "x", "top": 99})


def test_a_text_without_words_is_an_action_failure() -> None:
    with pytest.raises(ActionRuntimeError):
        run({"text": "?!"})


def test_the_integration_names_its_action() -> None:
    assert integration.name == "textkit"
    assert integration.action_names == ("count_words",)
