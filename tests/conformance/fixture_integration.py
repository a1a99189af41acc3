"""The conformance suite's fixture tools as one test-only integration (never shipped).

Loaded with TREADLE_EXTRA_INTEGRATIONS=fixture_integration:integration; each action is
exposed under the exact tool name the suite calls (MCP server toolOverrides).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio

from treadle.catalog.model import (
    Action,
    ActionAnnotations,
    ActionContext,
    Audio,
    AuthKind,
    ClientInteraction,
    EmbeddedResource,
    Image,
    Integration,
    Text,
    ToolContent,
)
from treadle.errors import ActionRuntimeError

# A 1x1 red PNG and a 1-sample 8 kHz mono WAV.
RED_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
TINY_WAV = (
    b"RIFF" + (37).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    + b"data" + (1).to_bytes(4, "little") + b"\x80"
)  # fmt: skip
STEP_SECONDS = 0.05


def _client(ctx: ActionContext) -> ClientInteraction:
    if ctx.client is None:
        raise ActionRuntimeError("this tool only runs over MCP", reason="mcp_only")
    return ctx.client


async def simple_text(_ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    return ToolContent([Text("This is a simple text response for testing.")])


async def image_content(_ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    return ToolContent([Image(RED_PIXEL_PNG, "image/png")])


async def audio_content(_ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    return ToolContent([Audio(TINY_WAV, "audio/wav")])


async def embedded_resource(_ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    text = "This is an embedded resource content."
    return ToolContent([EmbeddedResource("test://embedded-resource", "text/plain", text=text)])


async def multiple_content_types(_ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    document = json.dumps({"test": "data", "value": 123})
    return ToolContent(
        [
            Text("Multiple content types test:"),
            Image(RED_PIXEL_PNG, "image/png"),
            EmbeddedResource("test://mixed-content-resource", "application/json", text=document),
        ]
    )


async def tool_with_logging(ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    client = _client(ctx)
    await client.log("info", "Tool execution started")
    await anyio.sleep(STEP_SECONDS)
    await client.log("info", "Tool processing data")
    await anyio.sleep(STEP_SECONDS)
    await client.log("info", "Tool execution completed")
    return ToolContent([Text("Tool with logging executed successfully")])


async def error_handling(_ctx: ActionContext, _data: dict[str, Any]) -> Any:
    raise ActionRuntimeError("This tool intentionally returns an error for testing")


async def tool_with_progress(ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    client = _client(ctx)
    for step in (0, 50, 100):
        await client.progress(step, 100)
        if step < 100:
            await anyio.sleep(STEP_SECONDS)
    return ToolContent([Text("Tool with progress executed successfully")])


async def sampling(ctx: ActionContext, data: dict[str, Any]) -> ToolContent:
    answer = await _client(ctx).sample(str(data.get("prompt", "")), max_tokens=100)
    return ToolContent([Text(f"LLM response: {answer}")])


async def elicitation(ctx: ActionContext, data: dict[str, Any]) -> ToolContent:
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    answer = await _client(ctx).elicit(str(data.get("message", "")), schema)
    return ToolContent(
        [Text(f"User response: action={answer.action}, content={json.dumps(answer.content)}")]
    )


async def _elicit_with(ctx: ActionContext, message: str, schema: dict[str, Any]) -> ToolContent:
    answer = await _client(ctx).elicit(message, schema)
    content = json.dumps(answer.content)
    return ToolContent([Text(f"Elicitation completed: action={answer.action}, content={content}")])


async def elicitation_defaults(ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    """SEP-1034: a default value for every primitive type."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {
                "type": "string",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "default": True},
        },
    }
    return await _elicit_with(ctx, "Confirm your details", schema)


async def elicitation_enums(ctx: ActionContext, _data: dict[str, Any]) -> ToolContent:
    """SEP-1330: the five enum shapes."""
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
    }
    return await _elicit_with(ctx, "Choose your options", schema)


_NONE: dict[str, Any] = {"type": "object", "properties": {}}
_PROMPT = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}
_MESSAGE = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}
_HARMLESS = ActionAnnotations(read_only=True, destructive=False, idempotent=True, open_world=False)

# (tool name the suite calls, description, input schema, function)
TOOLS: tuple[tuple[str, str, dict[str, Any], Any], ...] = (
    ("test_simple_text", "Returns simple text.", _NONE, simple_text),
    ("test_image_content", "Returns an image.", _NONE, image_content),
    ("test_audio_content", "Returns audio.", _NONE, audio_content),
    ("test_embedded_resource", "Returns an embedded resource.", _NONE, embedded_resource),
    ("test_multiple_content_types", "Returns mixed content.", _NONE, multiple_content_types),
    ("test_tool_with_logging", "Logs while it runs.", _NONE, tool_with_logging),
    ("test_logging_tool", "Logs while it runs.", _NONE, tool_with_logging),
    ("test_error_handling", "Always fails.", _NONE, error_handling),
    ("test_tool_with_progress", "Reports progress.", _NONE, tool_with_progress),
    ("test_sampling", "Asks the client's model.", _PROMPT, sampling),
    ("test_missing_capability", "Needs the sampling capability.", _NONE, sampling),
    ("test_elicitation", "Asks the user.", _MESSAGE, elicitation),
    ("test_streaming_elicitation", "Asks the user.", _NONE, elicitation),
    ("test_elicitation_sep1034_defaults", "Asks with defaults.", _NONE, elicitation_defaults),
    ("test_elicitation_sep1330_enums", "Asks with enum shapes.", _NONE, elicitation_enums),
)

integration = Integration(
    name="conformance",
    display_name="Conformance fixtures",
    description="The MCP conformance suite's fixture tools.",
    auth_kind=AuthKind.NONE,
    actions=tuple(
        Action(name, name, description, schema, run, annotations=_HARMLESS)
        for name, description, schema, run in TOOLS
    ),
)


def tool_overrides(alias: str) -> list[dict[str, str]]:
    """MCP server toolOverrides naming every fixture tool exactly as the suite expects."""
    return [{"integrationAlias": alias, "actionName": name, "name": name} for name, *_ in TOOLS]
