"""Pipeline outcomes as MCP tool results: the one mapping for the MCP face.

Refusals become `isError` results whose text starts with the documented code, says what a
model can do about it and ends with the refusal's fields, so a model that sees only the text
has everything. `structuredContent` carries the same fields for programs, except on a tool
that declares an `outputSchema`: clients (the TypeScript SDK, so the MCP Inspector) validate
any `structuredContent` against that schema, error or not, and reject the whole result when
it does not conform, so the model would never see the message.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)
from pydantic import TypeAdapter

from treadle.catalog import model
from treadle.engine import ApprovalPending, Outcome, Refused, Succeeded, UpstreamFailed
from treadle.errors import ErrorCode

_ADVICE: dict[ErrorCode, str] = {
    ErrorCode.VALIDATION_ERROR: "Fix the arguments and call the tool again.",
    ErrorCode.ACTION_NOT_ALLOWED: "This action is turned off in the workspace configuration; "
    "do not retry it, and tell the user if they need it enabled.",
    ErrorCode.CONNECTION_REQUIRED: "The user has to connect their account for this "
    "integration before the tool can work; ask them to do so (when a connectUrl is given, "
    "send them that link to open), then call again.",
    ErrorCode.CONNECTION_NOT_FOUND: "The configured connection is missing; ask the workspace "
    "admin to fix the integration's connection.",
    ErrorCode.CONNECTION_ERROR: "The account's credentials were refused; the user has to "
    "re-authenticate the connection, then call again.",
    ErrorCode.QUOTA_EXCEEDED: "The monthly action quota is used up; retrying will not help "
    "until the quota resets or is raised.",
    ErrorCode.ACTION_FAILED: "The action could not complete; check the arguments or try "
    "again later.",
    ErrorCode.INTEGRATION_NOT_FOUND: "The integration is no longer configured; list the "
    "tools again.",
}


# Where a refusal's reason calls for other advice than its code's.
_REASON_ADVICE: dict[tuple[ErrorCode, str], str] = {
    (ErrorCode.ACTION_NOT_ALLOWED, "disabled_by_server"): "This tool is turned off on this "
    "MCP server; do not retry it, and tell the user if they need it enabled.",
    (ErrorCode.VALIDATION_ERROR, "server_override"): "The MCP server's configuration of this "
    "tool is broken, not the arguments; do not retry, tell the user to fix the server's "
    "tool overrides.",
}


def render(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def error_result(
    code: ErrorCode,
    message: str,
    extra: dict[str, Any] | None = None,
    *,
    declares_output: bool = False,
) -> CallToolResult:
    """A refusal as an `isError` result; `declares_output`: the tool has an `outputSchema`,
    so the result carries no `structuredContent` (the text holds every field)."""
    details = dict(extra or {})
    reason = details.get("reason")
    advice = _REASON_ADVICE.get((code, reason), "") if isinstance(reason, str) else ""
    advice = advice or _ADVICE.get(code, "")
    if code is ErrorCode.RATE_LIMITED:
        advice = f"Wait {details.get('retryAfter', 1)} seconds, then call the tool again."
    sentence = message if message.endswith((".", "!", "?")) else f"{message}."
    text = f"{code.value}: {sentence}" + (f" {advice}" if advice else "")
    if details:
        text += f"\nDetails: {json.dumps(details, ensure_ascii=False, default=str)}"
    fields = None if declares_output else {"error": code.value, "message": message, **details}
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=fields, is_error=True
    )


def to_result(outcome: Outcome, *, declares_output: bool = False) -> CallToolResult:
    """`declares_output`: the called tool's action has an `outputSchema` (see the module
    docstring for why its error results carry no `structuredContent`)."""
    match outcome:
        case Succeeded(output=model.ToolContent() as content):
            blocks = (
                [_block(block) for block in content.blocks]
                if content.blocks
                else [_WIRE_BLOCK.validate_python(block) for block in content["content"]]
            )
            return CallToolResult(content=blocks, structured_content=content.structured)
        case Succeeded(output=output, encoded=encoded):
            structured = output if isinstance(output, dict) else None
            # The pipeline's one encoding of the output (compact: fewer tokens for the model).
            text = output if isinstance(output, str) or encoded is None else encoded
            return CallToolResult(
                content=[TextContent(type="text", text=render(text))],
                structured_content=structured,
            )
        case UpstreamFailed(error=error, detail=detail):
            text = f"The service reported an error: {error}"
            if detail is not None:
                text += f"\nDetail: {render(detail)}"
            fields = None if declares_output else {"error": error, "detail": detail}
            return CallToolResult(
                content=[TextContent(type="text", text=text)],
                structured_content=fields,
                is_error=True,
            )
        case Refused(code=code, message=message, extra=extra):
            return error_result(code, message, extra, declares_output=declares_output)
        case ApprovalPending():
            return pending_result(outcome)


# Blocks that arrived in wire shape (`ToolContent.from_wire`) go back out as they came.
_WIRE_BLOCK: TypeAdapter[ContentBlock] = TypeAdapter(ContentBlock)


def _block(block: model.ContentBlock) -> ContentBlock:
    wire = model.content_block_json(block)
    match block:
        case model.Text(text=text):
            return TextContent(type="text", text=text)
        case model.Image(mime_type=mime):
            return ImageContent(type="image", data=wire["data"], mime_type=mime)
        case model.Audio(mime_type=mime):
            return AudioContent(type="audio", data=wire["data"], mime_type=mime)
        case model.EmbeddedResource(uri=uri, mime_type=mime, text=text):
            contents: TextResourceContents | BlobResourceContents
            if text is not None:
                contents = TextResourceContents(uri=uri, mime_type=mime, text=text)
            else:
                blob = wire["resource"]["blob"]
                contents = BlobResourceContents(uri=uri, mime_type=mime, blob=blob)
            return EmbeddedResource(type="resource", resource=contents)


def pending_result(outcome: ApprovalPending) -> CallToolResult:
    """For clients that cannot show an approval prompt: not an error, a status to act on."""
    approval = outcome.approval
    where = (
        f"A person can approve it at {outcome.approval_url} . "
        if outcome.approval_url
        else "A reviewer has to approve it in the workspace's approvals inbox. "
    )
    text = (
        f"This action is waiting for human approval (approval {approval.id}); it has not run. "
        + where
        + "Once it is approved, call this tool again with exactly the same arguments and it "
        f"will run once. The request expires at {approval.expires_at}."
    )
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content={
            "status": "approval_required",
            "approvalId": approval.id,
            "approvalUrl": outcome.approval_url,
            "expiresAt": approval.expires_at,
        },
    )
