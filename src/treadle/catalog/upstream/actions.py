"""An upstream's stored catalog as an `Integration`, and a tool result as an action's output.

The tools keep what the upstream declared (input and output schema, title, description,
annotations); the pipeline prunes and enforces partials on the input schema exactly as for a
built-in. A result's content blocks pass through unchanged (`ToolContent.from_wire`); an
`isError` result is the upstream reporting a failure (`UpstreamError`, the upstream-failure
outcome), not treadle failing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.types import CallToolResult

from treadle.catalog.model import (
    Action,
    ActionAnnotations,
    ActionContext,
    AuthKind,
    Integration,
    JSONObject,
    ToolContent,
)
from treadle.errors import UpstreamError
from treadle.store.upstreams import Upstream

log = logging.getLogger(__name__)

# What the REST API accepts as an action name (api/fields.py ActionName), so every tool an
# upstream lists can be named in allowedActions, partials and policies.
_ACTION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

AUTH_KINDS = {
    "none": AuthKind.NONE,
    "bearer": AuthKind.BEARER,
    "header": AuthKind.API_KEY,
    "oauth": AuthKind.OAUTH2,
}

CallFn = Callable[[str, str, ActionContext, JSONObject], Awaitable[ToolContent]]

# A workspace integration of an upstream: how its prompts and resources are named
# (catalog/upstream/content.py); other keys are kept as given, as before.
SETTINGS_SCHEMA: JSONObject = {
    "type": "object",
    "properties": {"contentNames": {"enum": ["namespaced", "upstream"]}},
    "additionalProperties": True,
}


def integration_for(upstream: Upstream, call: CallFn) -> Integration:
    actions: list[Action] = []
    seen: set[str] = set()
    for tool in upstream.tools:
        name = tool.get("name")
        if not isinstance(name, str) or not _ACTION_NAME.match(name) or name in seen:
            log.warning("upstream %s: tool %r skipped (name not usable)", upstream.name, name)
            continue
        seen.add(name)
        actions.append(_action(upstream.id, tool, name, call))
    return Integration(
        name=upstream.name,
        display_name=upstream.display_name,
        description=upstream.description or f"Tools of the MCP server '{upstream.display_name}'",
        auth_kind=AUTH_KINDS.get(str(upstream.auth.get("type")), AuthKind.NONE),
        actions=tuple(actions),
        settings_schema=SETTINGS_SCHEMA,
    )


def _action(upstream_id: str, tool: dict[str, Any], name: str, call: CallFn) -> Action:
    marks = tool.get("annotations") or {}
    schema = tool.get("inputSchema")
    output = tool.get("outputSchema")

    async def run(context: ActionContext, arguments: JSONObject) -> ToolContent:
        return await call(upstream_id, name, context, arguments)

    return Action(
        name=name,
        display_name=str(tool.get("title") or marks.get("title") or name),
        description=str(tool.get("description") or ""),
        input_schema=schema if isinstance(schema, dict) else {"type": "object"},
        output_schema=output if isinstance(output, dict) else None,
        annotations=ActionAnnotations(
            read_only=marks.get("readOnlyHint") is True,
            destructive=marks.get("destructiveHint") is not False,
            idempotent=marks.get("idempotentHint") is True,
            open_world=marks.get("openWorldHint") is not False,
        ),
        run=run,
    )


def wire(result: Any) -> JSONObject:
    dumped: JSONObject = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def output_of(result: CallToolResult) -> ToolContent:
    content = [wire(block) for block in result.content]
    if result.is_error:
        texts = [b.get("text") for b in content if b.get("type") == "text" and b.get("text")]
        message = "; ".join(str(t) for t in texts)[:2000] or "the upstream tool reported an error"
        raise UpstreamError(message, {"content": content})
    return ToolContent.from_wire(content, result.structured_content)
