"""Test-only integrations, loaded through TREADLE_EXTRA_INTEGRATIONS (never shipped).

`testkit` covers every outcome a tool call can have; `keyed` needs a connection and reports
which one it got (never the secret itself), and `echo_key` answers like a careless upstream
that quotes the credentials it was sent back inside a successful answer.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio

from treadle.catalog.model import (
    Action,
    ActionAnnotations,
    ActionContext,
    AuthKind,
    Integration,
)
from treadle.errors import ActionRuntimeError, UpstreamError

# In-process tests may hold a slow call open until they have seen what they wait for.
release = {"event": anyio.Event()}


async def _echo(_ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    return {"text": data["text"], "channel": data.get("channel"), "count": data.get("count")}


async def _upstream(_ctx: ActionContext, data: dict[str, Any]) -> Any:
    raise UpstreamError("channel_not_found", {"channel": data.get("channel")})


async def _crash(_ctx: ActionContext, _data: dict[str, Any]) -> Any:
    raise RuntimeError("boom: internal detail that must not leak")


async def _refuse(_ctx: ActionContext, _data: dict[str, Any]) -> Any:
    raise ActionRuntimeError("the remote host could not be reached", reason="connect_failed")


async def _wait(_ctx: ActionContext, _data: dict[str, Any]) -> dict[str, Any]:
    await release["event"].wait()
    return {"released": True}


async def _whoami(ctx: ActionContext, _data: dict[str, Any]) -> dict[str, Any]:
    connection = ctx.connection
    return {
        "connection": None if connection is None else connection.external_id,
        "endUser": ctx.end_user_id,
    }


async def _echo_key(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    values = {} if ctx.connection is None else dict(ctx.connection.values)
    key = values.get("apiKey") or values.get("password", "")
    if "username" in values:
        pair = f"{values['username']}:{values['password']}".encode()
        authorization = f"Basic {base64.b64encode(pair).decode()}"
    else:
        authorization = f"Bearer {key}"
    return {
        "headers": {"Authorization": authorization},
        "seen": [{"token": key}, key],
        key: "the key as a key",
        "login": values.get("username"),
        "note": data.get("note"),
    }


_ECHO_SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "What to echo"},
        "channel": {"type": "string", "description": "Where"},
        "count": {"type": "integer", "minimum": 0},
    },
    "required": ["text", "channel"],
}
_EMPTY = {"type": "object", "properties": {}, "additionalProperties": False}
_READ = ActionAnnotations(read_only=True, destructive=False, idempotent=True, open_world=False)

testkit = Integration(
    name="testkit",
    display_name="Test Kit",
    description="Actions with every outcome, for tests.",
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            name="echo",
            display_name="Echo",
            description="Echo the text back.",
            input_schema=_ECHO_SCHEMA,
            run=_echo,
            output_schema={
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "channel": {"type": ["string", "null"]},
                    "count": {"type": ["integer", "null"]},
                },
                "required": ["text"],
            },
            annotations=_READ,
        ),
        Action("upstream_error", "Upstream error", "Fails upstream.", _EMPTY, _upstream),
        Action("crash", "Crash", "Crashes.", _EMPTY, _crash),
        Action("unreachable", "Unreachable", "Cannot connect.", _EMPTY, _refuse),
        Action("wait", "Wait", "Waits until released.", _EMPTY, _wait),
    ),
)

keyed = Integration(
    name="keyed",
    display_name="Keyed",
    description="Needs a connection.",
    auth_kind=AuthKind.API_KEY,
    actions=(
        Action("whoami", "Who am I", "Which connection was used.", _EMPTY, _whoami),
        Action(
            "echo_key",
            "Echo key",
            "Answers with the connection's key in it.",
            {
                "type": "object",
                "properties": {"note": {"type": "string"}},
                "additionalProperties": False,
            },
            _echo_key,
        ),
    ),
)

integrations = (testkit, keyed)
