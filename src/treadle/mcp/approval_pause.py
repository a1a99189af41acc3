"""A gated tool call pauses in the best way the client supports (Human Gates in MCP).

- 2026-07-28 clients: an `InputRequiredResult` asking the client to open the hosted page (URL
  elicitation), or with `allowSelfApproval` an approve/reject form; the client calls again
  with the answer, and a decided approval runs the action. A pending one is waited for
  (event-driven, bounded) before asking again.
- Handshake-era clients that declare elicitation: the same two prompts pushed over the open
  call, which then stays open (with progress) until a person decides, runs the action and
  returns its result. A cancelled call leaves the approval pending for a later retry.
- Everyone else: a normal result (not an error) telling the model to call again once approved.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.server import ServerRequestContext
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestURLParams,
    ElicitResult,
    InputRequiredResult,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from treadle.engine import ApprovalPending, Outcome
from treadle.engine.approvals import ApprovalDesk
from treadle.errors import ErrorCode
from treadle.mcp.results import error_result, pending_result, to_result
from treadle.store.gates import Approval

# How long one 2026-07-28 round waits for a decision before asking the client again.
MODERN_ROUND_SECONDS = 20.0
APPROVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"approve": {"type": "boolean", "title": "Approve this action?"}},
    "required": ["approve"],
}
INPUT_KEY = "approval"

Rerun = Callable[[], Awaitable[Outcome]]


def _message(approval: Approval) -> str:
    return (
        f"Approval needed: {approval.integration_alias}.{approval.action_name} "
        f"({approval.integration_name}) wants to run with {json.dumps(approval.input_preview)}"
    )[:2000]


def _modes(ctx: ServerRequestContext[Any, Any]) -> tuple[bool, bool]:
    """(url, form) elicitation support; a bare `elicitation: {}` means form (spec)."""
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None:
        return False, False
    url = elicitation.url is not None
    form = elicitation.form is not None or (elicitation.url is None)
    return url, form


def _closed(approval: Approval) -> CallToolResult:
    if approval.status == "rejected":
        reason = f": {approval.reason}" if approval.reason else ""
        return error_result(
            ErrorCode.APPROVAL_REJECTED,
            f"A person rejected this action{reason}",
            {"approvalId": approval.id},
        )
    return error_result(
        ErrorCode.APPROVAL_EXPIRED,
        "Nobody approved this action in time",
        {"approvalId": approval.id},
    )


class ApprovalPause:
    def __init__(self, desk: ApprovalDesk, progress_seconds: float) -> None:
        self._desk = desk
        self._progress_seconds = progress_seconds

    async def pause(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: CallToolRequestParams,
        pending: ApprovalPending,
        actor: str,
        rerun: Rerun,
    ) -> CallToolResult | InputRequiredResult:
        url_mode, form_mode = _modes(ctx)
        link = pending.approval_url if url_mode else None
        self_approval = form_mode and pending.policy.allow_self_approval
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        # 2026-07-28: a form when the caller may approve it themselves, else the hosted page.
        # Handshake era: the hosted page when the client can open URLs, else the form.
        if modern and self_approval:
            link = None
        if link is None and not self_approval:
            return pending_result(pending)
        if modern:
            return await self._modern(params, pending, link, actor, rerun)
        return await self._handshake(ctx, pending, link, actor, rerun)

    # -- 2026-07-28 ---------------------------------------------------------------------------

    async def _modern(
        self,
        params: CallToolRequestParams,
        pending: ApprovalPending,
        link: str | None,
        actor: str,
        rerun: Rerun,
    ) -> CallToolResult | InputRequiredResult:
        """`link` None: ask with the approve/reject form."""
        approval = pending.approval
        answer = (params.input_responses or {}).get(INPUT_KEY)
        state = _state(params.request_state)
        if isinstance(answer, ElicitResult) and state == approval.id:
            if link is None:  # the answer to our form
                approve = answer.action == "accept" and bool((answer.content or {}).get("approve"))
                status = "approved" if approve else "rejected"
                await self._desk.decide(approval, status, f"self:{actor}", None, pending.policy)
            deadline = anyio.current_time() + MODERN_ROUND_SECONDS
            decided = await self._desk.wait(approval, deadline)
            if decided.status == "approved":
                return await self._run(rerun)
            if decided.status != "pending":
                return _closed(decided)
        request: ElicitRequest
        if link is not None:
            request = ElicitRequest(
                params=ElicitRequestURLParams(
                    message=_message(approval), url=link, elicitation_id=approval.id
                )
            )
        else:
            request = ElicitRequest(
                params=ElicitRequestFormParams(
                    message=_message(approval), requested_schema=APPROVE_SCHEMA
                )
            )
        return InputRequiredResult(
            input_requests={INPUT_KEY: request},
            request_state=json.dumps({"approval": approval.id}),
        )

    # -- handshake era ------------------------------------------------------------------------

    async def _handshake(
        self,
        ctx: ServerRequestContext[Any, Any],
        pending: ApprovalPending,
        link: str | None,
        actor: str,
        rerun: Rerun,
    ) -> CallToolResult:
        approval = pending.approval
        if link is not None:
            await ctx.session.elicit_url(
                _message(approval), link, approval.id, related_request_id=ctx.request_id
            )
        else:
            answer = await ctx.session.elicit_form(
                _message(approval), APPROVE_SCHEMA, related_request_id=ctx.request_id
            )
            approve = answer.action == "accept" and bool((answer.content or {}).get("approve"))
            status = "approved" if approve else "rejected"
            await self._desk.decide(approval, status, f"self:{actor}", None, pending.policy)
        decided = await self._wait_with_progress(ctx, approval)
        if link is not None:
            await ctx.session.send_elicit_complete(approval.id, related_request_id=ctx.request_id)
        if decided.status == "approved":
            return await self._run(rerun)
        return _closed(decided)

    async def _wait_with_progress(
        self, ctx: ServerRequestContext[Any, Any], approval: Approval
    ) -> Approval:
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                waited = 0.0
                while True:
                    await anyio.sleep(self._progress_seconds)
                    waited += self._progress_seconds
                    await ctx.session.report_progress(waited, None, "waiting for approval")

            tg.start_soon(tick)
            # Bounded by the approval's own expiry: settle() turns it into rejected/expired.
            decided = await self._desk.wait(approval, float("inf"))
            tg.cancel_scope.cancel()
        return decided

    @staticmethod
    async def _run(rerun: Rerun) -> CallToolResult:
        outcome = await rerun()
        if isinstance(outcome, ApprovalPending):
            # Someone else's identical call used this approval first: ask afresh.
            return pending_result(outcome)
        return to_result(outcome)


def _state(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        found = json.loads(raw).get("approval")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None
