"""Human Gates: the gate step of the pipeline and the desk where approvals are decided.

The gate runs after input merging, validation and connection resolution (so it judges the
final input and never asks a person to approve a call that cannot run) and before limits,
quota and the action. Approvals are found again by key: REST's idempotency key, or for MCP a
key derived from (server, end user, tool, canonical arguments) inside the policy's reuse
window, so a model that calls the same tool again after approval runs it exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from treadle.clock import iso, parse_iso, utcnow
from treadle.engine.approval_links import ApprovalLinks
from treadle.engine.policies import CallFacts, governing_policy
from treadle.engine.webhooks import WebhookNotifier
from treadle.errors import ErrorCode, Refusal, TreadleError
from treadle.store import Store
from treadle.store.gates import Approval, ApprovalPolicy

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class ApprovalRequired(TreadleError):
    """Signal (not a failure): the call waits for a person."""

    def __init__(self, approval: Approval, policy: ApprovalPolicy) -> None:
        super().__init__(approval.id)
        self.approval = approval
        self.policy = policy


@dataclass(frozen=True, slots=True)
class GatePass:
    policy: ApprovalPolicy | None
    approval: Approval | None  # an approved request this call may consume


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(facts: CallFacts) -> str:
    material = canonical(
        [
            facts.workspace_id,
            facts.integration_alias,
            facts.action_name,
            facts.end_user_id,
            facts.input,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def new_approval_id() -> str:
    return f"apr_{secrets.token_hex(16)}"


class ApprovalDesk:
    def __init__(
        self, store: Store, links: ApprovalLinks, webhooks: WebhookNotifier, public_url: str
    ) -> None:
        self._store = store
        self._links = links
        self._webhooks = webhooks
        self._public_url = public_url.rstrip("/")
        # The calls waiting on each approval in this process, to wake at once on a decision.
        # A waiter removes itself when it stops waiting, however it ends (decided, expired,
        # out of time, cancelled), so this holds only approvals someone waits on right now.
        self._waiters: dict[str, set[anyio.Event]] = {}

    # -- links ------------------------------------------------------------------------------

    def hosted_url(self, approval: Approval, policy: ApprovalPolicy | None) -> str | None:
        if policy is not None and policy.approval_access_mode == "dashboard_only":
            return None
        token = self._links.token(approval.id, approval.expires_at)
        return f"{self._public_url}/approve/{approval.id}?token={token}"

    def verify_link(self, token: str, approval_id: str) -> bool:
        return self._links.verify(token, approval_id)

    # -- the gate ---------------------------------------------------------------------------

    async def check(
        self,
        facts: CallFacts,
        policies: Sequence[ApprovalPolicy],
        *,
        org_id: str,
        actor: str,
        approval_key: str | None,
        reuse_window: bool,
        preview: dict[str, Any],
    ) -> GatePass:
        """`policies`: the org's policies for the call's workspace (and org-wide ones)."""
        policy = governing_policy(policies, facts)
        if policy is None or policy.decision == "auto_approve":
            return GatePass(policy, None)
        if policy.decision == "block":
            raise Refusal(
                ErrorCode.ACTION_BLOCKED,
                f"Blocked by approval policy '{policy.name}'",
                policyId=policy.id,
                policyName=policy.name,
            )
        if policy.decision == "notify_only":
            self._webhooks.notify(
                policy.notify_webhook_url,
                policy.webhook_secret,
                "action.notified",
                {"policyId": policy.id, **_call_summary(facts, preview)},
            )
            return GatePass(policy, None)
        print_ = fingerprint(facts)
        if approval_key is not None:
            existing = await self._store.approvals.latest_for_key(org_id, approval_key)
            if existing is not None and self._reusable(existing, policy, reuse_window):
                if existing.fingerprint != print_:
                    raise Refusal(
                        ErrorCode.IDEMPOTENCY_KEY_MISMATCH,
                        "This idempotency key was used with a different request",
                    )
                existing = await self.settle(existing, policy)
                if existing.status == "approved" and existing.consumed_at is None:
                    return GatePass(policy, existing)
                if existing.status == "pending":
                    raise ApprovalRequired(existing, policy)
                if existing.status == "rejected":
                    raise Refusal(
                        ErrorCode.APPROVAL_REJECTED,
                        "The approval request was rejected"
                        + (f": {existing.reason}" if existing.reason else ""),
                        approvalId=existing.id,
                    )
                if existing.status == "expired":
                    raise Refusal(
                        ErrorCode.APPROVAL_EXPIRED,
                        "The approval request expired before anyone decided",
                        approvalId=existing.id,
                    )
        approval = await self._create(facts, policy, org_id, actor, approval_key, print_, preview)
        raise ApprovalRequired(approval, policy)

    @staticmethod
    def _reusable(existing: Approval, policy: ApprovalPolicy, reuse_window: bool) -> bool:
        if not reuse_window:
            return True  # an explicit idempotency key always names the same request
        age = utcnow() - parse_iso(existing.created_at)
        return age <= timedelta(seconds=policy.reuse_window_seconds)

    async def _create(
        self,
        facts: CallFacts,
        policy: ApprovalPolicy,
        org_id: str,
        actor: str,
        approval_key: str | None,
        print_: str,
        preview: dict[str, Any],
    ) -> Approval:
        now = utcnow()
        approval = Approval(
            id=new_approval_id(),
            org_id=org_id,
            workspace_id=facts.workspace_id,
            policy_id=policy.id,
            status="pending",
            source=facts.source,
            actor=actor,
            integration_name=facts.integration_name,
            integration_alias=facts.integration_alias,
            action_name=facts.action_name,
            end_user_id=facts.end_user_id,
            approval_key=approval_key or f"apr_key_{secrets.token_urlsafe(18)}",
            fingerprint=print_,
            input_preview=preview,
            reason=None,
            decided_by=None,
            decided_at=None,
            consumed_at=None,
            expires_at=iso(now + timedelta(seconds=policy.timeout_seconds)),
            created_at=iso(now),
        )
        async with self._store.db.write(actor) as txn:
            await self._store.approvals.create(txn, approval)
        self._notify(policy, "approval.pending", approval)
        return approval

    # -- deciding and waiting ---------------------------------------------------------------

    async def settle(self, approval: Approval, policy: ApprovalPolicy | None = None) -> Approval:
        """Apply the timeout to a pending approval whose time is up."""
        if approval.status != "pending" or utcnow() < parse_iso(approval.expires_at):
            return approval
        if policy is None:
            policy = await self._store.approval_policies.get(approval.org_id, approval.policy_id)
        outcome = "rejected" if policy and policy.default_on_timeout == "reject" else "expired"
        await self.decide(approval, outcome, "system:timeout", "timed out", policy)
        return await self._store.approvals.get(approval.id) or approval

    async def settle_overdue(self, org_id: str) -> None:
        """Apply the timeout to every pending approval of the org whose time is up, so lists
        filtered by status see the status a person would."""
        for approval in await self._store.approvals.overdue(org_id, iso(utcnow())):
            await self.settle(approval)

    async def decide(
        self,
        approval: Approval,
        status: str,
        by: str,
        reason: str | None,
        policy: ApprovalPolicy | None = None,
    ) -> bool:
        """Final: only a pending approval can be decided, once. Recorded in the activity log."""
        async with self._store.db.write(by) as txn:
            decided = await self._store.approvals.decide(txn, approval.id, status, by, reason)
            if decided:
                await self._store.activity.record(
                    txn,
                    org_id=approval.org_id,
                    workspace_id=approval.workspace_id,
                    type="approval_decision",
                    source=approval.source,
                    actor=by,
                    status=status,
                    integration_name=approval.integration_name,
                    integration_alias=approval.integration_alias,
                    action_name=approval.action_name,
                    end_user_id=approval.end_user_id,
                    target_type="approval",
                    target_id=approval.id,
                    change=status,
                    input={"reason": reason} if reason else None,
                )
        if decided:
            self._wake(approval.id)
            if policy is None:
                policy = await self._store.approval_policies.get(
                    approval.org_id, approval.policy_id
                )
            updated = await self._store.approvals.get(approval.id)
            if policy is not None and updated is not None:
                self._notify(policy, f"approval.{status}", updated)
        return decided

    async def decide_by_key(
        self, approval: Approval, status: str, actor: str, reason: str | None
    ) -> Approval:
        """A decision by an API key's holder (REST, the console): refused when the policy
        allows only its hosted link, when the asking key would approve its own request
        (allowSelfApproval off), or when the approval is no longer pending."""
        policy = await self._store.approval_policies.get(approval.org_id, approval.policy_id)
        if policy is not None and policy.approval_access_mode == "hosted_link_only":
            raise Refusal(
                ErrorCode.FORBIDDEN, "This approval can only be decided through its hosted link"
            )
        if (
            status == "approved"
            and policy is not None
            and not policy.allow_self_approval
            and actor == approval.actor
        ):
            # An agent holding a key must not approve its own request (rejecting it is fine).
            raise Refusal(
                ErrorCode.FORBIDDEN,
                "The API key that asked for this action cannot approve it"
                " (allowSelfApproval is off)",
            )
        if approval.status != "pending" or not await self.decide(
            approval, status, actor, reason, policy
        ):
            raise Refusal(
                ErrorCode.APPROVAL_NOT_PENDING,
                "This approval was already decided",
                status=approval.status,
            )
        decided = await self._store.approvals.get(approval.id)
        assert decided is not None
        return decided

    def _wake(self, approval_id: str) -> None:
        for event in self._waiters.pop(approval_id, ()):
            event.set()

    async def _wait_for_decision(self, approval_id: str, seconds: float) -> None:
        """Until this process decides the approval, or `seconds` pass."""
        event = anyio.Event()
        waiters = self._waiters.setdefault(approval_id, set())
        waiters.add(event)
        try:
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            waiters.discard(event)
            # `_wake` may have taken this set away already, and a new one may be in its place.
            if not waiters and self._waiters.get(approval_id) is waiters:
                del self._waiters[approval_id]

    async def wait(self, approval: Approval, deadline: float) -> Approval:
        """Wait until the approval is decided or expires, or `deadline` (anyio time) passes.

        Woken at once by decisions in this process; decisions made by another process on the
        same database are seen within POLL_SECONDS."""
        current = approval
        while current.status == "pending":
            expires_in = (parse_iso(current.expires_at) - utcnow()).total_seconds()
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return current
            await self._wait_for_decision(
                current.id, min(POLL_SECONDS, remaining, max(expires_in, 0) + 0.01)
            )
            found = await self._store.approvals.get(current.id)
            current = await self.settle(found or current)
        return current

    def _notify(self, policy: ApprovalPolicy, event: str, approval: Approval) -> None:
        data = approval.to_json()
        data["approvalUrl"] = self.hosted_url(approval, policy)
        self._webhooks.notify(policy.notify_webhook_url, policy.webhook_secret, event, data)


def _call_summary(facts: CallFacts, preview: dict[str, Any]) -> dict[str, Any]:
    return {
        "workspaceId": facts.workspace_id,
        "source": facts.source,
        "integrationName": facts.integration_name,
        "integrationAlias": facts.integration_alias,
        "actionName": facts.action_name,
        "endUserId": facts.end_user_id,
        "inputPreview": preview,
    }
