"""The execute pipeline: the one place where a call is selected, merged, checked and run.

select → allow → partials → validate → state scope → connection → gate → rate limit →
(claim the approval) → quota → run → record. Every face (REST, MCP) builds an
`ExecuteRequest` and maps the `Outcome` back.

A request whose configuration was assumed (`ExecuteRequest.assumed_version`) is confirmed
before the first thing that depends on it leaves the pipeline: in the admission statement on
the way to a run, or by a read of its own before a refusal is recorded or a policy is asked.
If the version moved, `StaleConfiguration` goes back to the face, which serves the request
again at the newer version; nothing was counted, recorded or answered.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio
import httpx2

from treadle.catalog.model import Action, ActionContext, Integration, StateStore
from treadle.catalog.registry import Catalog
from treadle.engine.approvals import ApprovalDesk, ApprovalRequired
from treadle.engine.connections import ConnectionResolver
from treadle.engine.end_user_ids import check_end_user_id
from treadle.engine.limits import Admission, QuotaGate, RateLimiter
from treadle.engine.outcome import (
    ApprovalPending,
    Outcome,
    RateStatus,
    Refused,
    Succeeded,
    UpstreamFailed,
)
from treadle.engine.partials import effective_partials, enforced_values, merge_input
from treadle.engine.policies import CallFacts
from treadle.engine.redaction import redact, scrub, secret_values
from treadle.engine.request import ExecuteRequest
from treadle.engine.selection import select_workspace_integration
from treadle.engine.validation import validate_input
from treadle.errors import (
    ActionRuntimeError,
    ConnectionCredentialsError,
    ErrorCode,
    NotFound,
    Refusal,
    StaleConfiguration,
    UpstreamError,
    ValidationFailed,
)
from treadle.net import allow_private_network
from treadle.oauth import OAuth
from treadle.store import Store
from treadle.store.gates import Approval, ApprovalPolicy
from treadle.store.records import Org, Partial, WorkspaceIntegration

log = logging.getLogger(__name__)

DEFAULT_ACTION_TIMEOUT = 60.0


@dataclass(slots=True)
class _Trace:
    """What is known so far about a call, for the activity record."""

    configured: WorkspaceIntegration | None = None
    # The merged input, redacted; None if the call was refused before merging (then the
    # record holds the request's input, redacted when it is written).
    recorded_input: dict[str, Any] | None = None
    rate: RateStatus | None = None
    # The action, once resolved (a label for observers: never a name a caller made up).
    action: str | None = None
    # The request's assumed configuration version until it is confirmed, then None.
    unconfirmed: int | None = None
    # time.perf_counter() at the end of each step, for observers (CallObserver).
    prepared: float = 0.0
    connected: float = 0.0
    admitted: float = 0.0


@dataclass(frozen=True, slots=True)
class CallFinished:
    """What an observer learns of each call: labels from the configuration, never an input
    value; the step ends are perf_counter() readings (0.0: the call stopped before)."""

    request: ExecuteRequest
    outcome: Outcome
    integration: str | None
    action: str | None
    started: float
    prepared: float
    connected: float
    admitted: float
    finished: float


# Called once per call, after it finished (metrics, traces). None: nothing observes.
CallObserver = Callable[[CallFinished], None]


def _chosen_partials(
    candidates: Sequence[Partial],
    integration: Integration,
    configured: WorkspaceIntegration,
    action: Action,
    request: ExecuteRequest,
) -> list[Partial]:
    """The partials of this call: the MCP server override's ids when it sets some, else the
    caller's. An id that does not apply is refused either way, never skipped: a partial an
    admin chose may be the one that enforces a value."""
    override = request.tool_override
    server_ids = override.partial_ids if override is not None else None
    ids = request.partial_ids if server_ids is None else server_ids
    try:
        return effective_partials(
            [p for p in candidates if p.integration_name == integration.name],
            integration_name=integration.name,
            alias=configured.alias,
            action_name=action.name,
            partial_ids=ids,
        )
    except ValidationFailed as refused:
        if server_ids is None:
            raise
        # The caller sent no partial ids: name the server's configuration, not an argument.
        raise ValidationFailed(
            f"The MCP server's override of this tool is misconfigured: {refused.message}",
            field=f"toolOverrides.{refused.extra.get('field', 'partialIds')}",
            reason="server_override",
        ) from None


class Executor:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        http: httpx2.AsyncClient,
        rate_limiter: RateLimiter,
        quota: QuotaGate,
        *,
        approvals: ApprovalDesk | None = None,
        action_timeout: float = DEFAULT_ACTION_TIMEOUT,
        oauth: OAuth | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._http = http
        self._rate_limiter = rate_limiter
        self._quota = quota
        # Where the limiter and the quota share a database: both counted in one round trip.
        self._admission = admission
        self._connections = ConnectionResolver(store.connections, oauth)
        self._oauth = oauth
        self._approvals = approvals
        self._action_timeout = action_timeout
        # The one hook of observability on the call path (treadle.observability).
        self.observers: list[CallObserver] = []

    async def execute(self, request: ExecuteRequest) -> Outcome:
        """The call's outcome, recorded. Raises `StaleConfiguration` (and records nothing)
        when the request's assumed configuration turned out not to be current."""
        trace = _Trace(unconfirmed=request.assumed_version)
        started = time.perf_counter()
        try:
            outcome = await self._execute(request, trace, started)
        except Refusal as refusal:
            # Refused before admission confirmed the configuration: by the current one?
            await self._confirm(trace)
            outcome = Refused(refusal.code, refusal.message, refusal.extra, trace.rate)
        except ApprovalRequired as waiting:
            assert self._approvals is not None
            url = self._approvals.hosted_url(waiting.approval, waiting.policy)
            outcome = ApprovalPending(waiting.approval, waiting.policy, url)
        if trace.configured is not None:
            await self._record(request, trace, outcome, started)
        if self.observers:
            finished = CallFinished(
                request,
                outcome,
                None if trace.configured is None else trace.configured.integration_name,
                trace.action,
                started,
                trace.prepared,
                trace.connected,
                trace.admitted,
                time.perf_counter(),
            )
            for observe in self.observers:
                observe(finished)
        return outcome

    async def _execute(self, request: ExecuteRequest, trace: _Trace, started: float) -> Outcome:
        config = request.config
        if config is None:
            config = await self._store.config.workspace(request.org_id, request.workspace_id)
        if config is None:
            raise NotFound("Workspace")
        org = config.org
        integration = self._catalog.get(request.integration_name, request.org_id)
        if integration is None:
            raise Refusal(
                ErrorCode.INTEGRATION_NOT_FOUND,
                f"Integration '{request.integration_name}' not found",
            )
        action = integration.action(request.action_name)
        if action is None:
            raise Refusal(
                ErrorCode.NOT_FOUND,
                f"Action '{request.action_name}' not found in integration '{integration.name}'",
            )
        configured = select_workspace_integration(
            config.integrations,
            integration_name=integration.name,
            workspace_integration_id=request.workspace_integration_id,
            alias=request.integration_alias,
        )
        trace.configured = configured
        trace.action = action.name
        if not configured.allows(action.name):
            raise Refusal(
                ErrorCode.ACTION_NOT_ALLOWED,
                f"Action '{action.name}' is not allowed for '{configured.alias}' in this workspace",
                integrationAlias=configured.alias,
                actionName=action.name,
            )
        override = request.tool_override
        if override is not None and not override.enabled:
            raise Refusal(
                ErrorCode.ACTION_NOT_ALLOWED,
                f"Action '{action.name}' of '{configured.alias}' is disabled on this MCP server",
                integrationAlias=configured.alias,
                actionName=action.name,
                reason="disabled_by_server",
            )
        partials = _chosen_partials(config.partials, integration, configured, action, request)
        merged = merge_input(partials, request.input, refuse_enforced=request.refuse_enforced_keys)
        trace.recorded_input = redact(merged, enforced_values(partials))
        validate_input(action.input_schema, merged)
        check_end_user_id(request.end_user_id)  # every face, and ids stored before the rule
        state = self._state_for(integration, configured, request)
        trace.prepared = time.perf_counter()
        # An OAuth refresh is a write at the provider: only at the current configuration.
        confirm = None if trace.unconfirmed is None else partial(self._confirm, trace)
        connection = await self._connections.resolve(request, integration, configured, confirm)
        trace.connected = time.perf_counter()
        if connection is not None:
            # Neither the record nor an approval's preview may quote the connection's secrets,
            # whichever field of the input carried them.
            trace.recorded_input = scrub(trace.recorded_input, secret_values(connection.values))
        if config.policies:
            # A policy may pause or block the call: only as the current configuration says.
            await self._confirm(trace)
        approved = await self._gate(request, configured, config.policies, merged, trace)
        if approved is None and self._admission is not None:
            # Nothing to consume between the two: the hit and the quota unit in one step,
            # counted only if the assumed configuration (if any) is still current.
            admitted = await self._admission.admit(
                org.id,
                org.rate_limit,
                org.rate_window_seconds,
                org.id,
                org.monthly_quota,
                expected_version=trace.unconfirmed,
            )
            trace.unconfirmed = None
            trace.rate = admitted.rate
            if not admitted.rate_allowed:
                raise _rate_limited(admitted.rate)
            if not admitted.quota_counted:
                raise _quota_exceeded(org, admitted.quota_used)
        else:
            await self._confirm(trace)
            await self._admit(org, approved, trace)
        trace.admitted = time.perf_counter()
        context = ActionContext(
            workspace_id=request.workspace_id,
            integration_alias=configured.alias,
            action_name=action.name,
            end_user_id=request.end_user_id,
            connection=connection,
            settings=configured.settings,
            http=self._http,
            state=state,
            client=request.client,
        )
        return await self._run(action, context, merged, trace.rate, started)

    async def _confirm(self, trace: _Trace) -> None:
        """Raises StaleConfiguration if the assumed configuration version moved."""
        if trace.unconfirmed is None:
            return
        version = await self._store.config.version()
        if version != trace.unconfirmed:
            raise StaleConfiguration(version)
        trace.unconfirmed = None

    async def _admit(self, org: Org, approved: Approval | None, trace: _Trace) -> None:
        """The rate-limit hit, then the approval (if any) consumed, then the quota unit."""
        allowed, trace.rate = await self._rate_limiter.hit(
            org.id, org.rate_limit, org.rate_window_seconds
        )
        if not allowed:
            raise _rate_limited(trace.rate)
        if approved is not None:
            # One approval, one run: concurrent retries race here and only one wins.
            if not await self._store.approvals.consume(approved.id):
                raise Refusal(
                    ErrorCode.APPROVAL_NOT_PENDING,
                    "This approval was already used to run the action",
                    approvalId=approved.id,
                )
            try:
                await self._reserve_quota(org)
            except Refusal:
                await self._store.approvals.release(approved.id)
                raise
        else:
            await self._reserve_quota(org)

    async def _gate(
        self,
        request: ExecuteRequest,
        configured: WorkspaceIntegration,
        policies: Sequence[ApprovalPolicy],
        merged: dict[str, Any],
        trace: _Trace,
    ) -> Approval | None:
        """Human Gates: block, pause for a person, or let the call through."""
        if self._approvals is None:
            return None
        facts = CallFacts(
            source=request.source.value,
            workspace_id=request.workspace_id,
            integration_name=configured.integration_name,
            integration_alias=configured.alias,
            action_name=request.action_name,
            connection_strategy=configured.connection_strategy.value,
            end_user_id=request.end_user_id,
            mcp_server_id=request.mcp_server_id,
            input=merged,
        )
        passed = await self._approvals.check(
            facts,
            policies,
            org_id=request.org_id,
            actor=request.actor,
            approval_key=request.approval_key,
            reuse_window=request.approval_reuse_window,
            preview=trace.recorded_input or {},
        )
        return passed.approval

    def _state_for(
        self,
        integration: Integration,
        configured: WorkspaceIntegration,
        request: ExecuteRequest,
    ) -> StateStore | None:
        if not integration.stateful:
            return None
        persistence = configured.settings.get("persistence") or {}
        scope = persistence.get("scope", "end_user") if isinstance(persistence, dict) else None
        if scope == "workspace":
            owner = "*"
        elif request.end_user_id is None:
            raise ValidationFailed(
                f"endUserId is required: '{configured.alias}' keeps its state per end user",
                field="endUserId",
            )
        else:
            owner = f"user:{request.end_user_id}"
        return self._store.kv(f"{configured.workspace_id}/{configured.id}/{owner}")

    async def _reserve_quota(self, org: Org) -> None:
        counted, used = await self._quota.reserve(org.id, org.monthly_quota)
        if not counted:
            raise _quota_exceeded(org, used)

    async def _run(
        self,
        action: Action,
        context: ActionContext,
        merged: dict[str, Any],
        rate: RateStatus | None,
        started: float,
    ) -> Outcome:
        secrets = secret_values(context.connection.values) if context.connection else ()
        outcome = await self._attempt(action, context, merged, rate, started, secrets)
        return _outward(action, outcome, secrets)

    async def _attempt(
        self,
        action: Action,
        context: ActionContext,
        merged: dict[str, Any],
        rate: RateStatus | None,
        started: float,
        secrets: tuple[str, ...],
        *,
        refresh_on_401: bool = True,
    ) -> Outcome:
        def elapsed() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            with (
                anyio.fail_after(self._action_timeout),
                allow_private_network(context.settings.get("allowPrivateNetwork") is True),
            ):
                output = await action.run(context, merged)
        except UpstreamError as failure:
            return UpstreamFailed(failure.error, failure.detail, elapsed(), rate)
        except ActionRuntimeError as failure:
            return Refused(ErrorCode.ACTION_FAILED, failure.message, dict(failure.details), rate)
        except ConnectionCredentialsError as failure:
            if refresh_on_401:
                retried = await self._retry_refreshed(action, context, merged, rate, started)
                if retried is not None:
                    return retried
            return Refused(ErrorCode.CONNECTION_ERROR, failure.message, {}, rate)
        except Refusal as refusal:
            return Refused(refusal.code, refusal.message, refusal.extra, rate)
        except TimeoutError:
            return Refused(
                ErrorCode.ACTION_FAILED,
                f"The action did not finish within {self._action_timeout:g} seconds",
                {"reason": "timeout"},
                rate,
            )
        except Exception as crash:
            # The traceback stays in the server log (exception messages may quote the
            # credentials, so they are scrubbed); the caller gets no internals.
            details = scrub("".join(traceback.format_exception(crash)), secrets)
            log.error("action %s crashed\n%s", action.name, details)
            return Refused(
                ErrorCode.ACTION_FAILED,
                "The action failed unexpectedly",
                {"reason": "crashed"},
                rate,
            )
        return Succeeded(output, elapsed(), rate)

    async def _retry_refreshed(
        self,
        action: Action,
        context: ActionContext,
        merged: dict[str, Any],
        rate: RateStatus | None,
        started: float,
    ) -> Outcome | None:
        """The provider refused an oauth2 token: refresh it once and run the action once more."""
        if self._oauth is None or not self._oauth.refresher.can_refresh(context.connection):
            return None
        assert context.connection is not None
        try:
            fresh = await self._oauth.refresher.after_rejection(context.connection)
        except Refusal as refusal:
            return Refused(refusal.code, refusal.message, refusal.extra, rate)
        secrets = secret_values(fresh.values)
        again = replace(context, connection=fresh)
        outcome = await self._attempt(
            action, again, merged, rate, started, secrets, refresh_on_401=False
        )
        return _outward(action, outcome, secrets)

    async def _record(
        self, request: ExecuteRequest, trace: _Trace, outcome: Outcome, started: float
    ) -> None:
        configured = trace.configured
        assert configured is not None
        match outcome:
            case Succeeded():
                status, code = "succeeded", None
            case UpstreamFailed():
                status, code = "upstream_failed", None
            case Refused(code=ErrorCode.ACTION_FAILED | ErrorCode.CONNECTION_ERROR):
                status, code = "failed", outcome.code.value
            case Refused():
                status, code = "refused", outcome.code.value
            case ApprovalPending():
                status, code = "approval_pending", None
        await self._store.ledger.record(
            org_id=request.org_id,
            workspace_id=request.workspace_id,
            type="action_execution",
            source=request.source.value,
            actor=request.actor,
            status=status,
            integration_name=configured.integration_name,
            integration_alias=configured.alias,
            action_name=request.action_name,
            end_user_id=request.end_user_id,
            duration_ms=round((time.perf_counter() - started) * 1000),
            error_code=code,
            input=redact(request.input) if trace.recorded_input is None else trace.recorded_input,
        )


def _rate_limited(rate: RateStatus) -> Refusal:
    seconds = rate.retry_after
    return Refusal(
        ErrorCode.RATE_LIMITED,
        f"Rate limit exceeded. Try again in {seconds} seconds.",
        retryAfter=seconds,
    )


def _quota_exceeded(org: Org, used: int) -> Refusal:
    return Refusal(
        ErrorCode.QUOTA_EXCEEDED,
        "Monthly action quota exceeded",
        current=used,
        limit=org.monthly_quota,
        plan=org.plan,
    )


_RESERVED_FIELDS = frozenset({"error", "message"})


def _is_json(value: Any) -> bool:
    return _encoded(value) is not None


def _encoded(value: Any) -> str | None:
    """`value` as compact JSON, or None when it is not JSON (NaN and infinities included)."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None


def _outward(action: Action, outcome: Outcome, secrets: tuple[str, ...]) -> Outcome:
    """What an action reported, made safe to answer: JSON only, no credentials quoted back."""
    match outcome:
        case Succeeded():
            encoded = _encoded(outcome.output)
            if encoded is not None:
                output = outcome.output
                if secrets:
                    # An upstream may echo the credentials it was sent (a debug endpoint, a
                    # request echo) inside a perfectly good answer.
                    output = scrub(output, secrets)
                    encoded = _encoded(output)
                return replace(outcome, output=output, encoded=encoded)
            log.error("action %s returned output that is not JSON", action.name)
            return Refused(
                ErrorCode.ACTION_FAILED,
                "The action returned output that is not JSON",
                {"reason": "invalid_output"},
                outcome.rate,
            )
        case UpstreamFailed():
            detail = outcome.detail if _is_json(outcome.detail) else None
            return UpstreamFailed(
                scrub(outcome.error, secrets),
                scrub(detail, secrets),
                outcome.duration_ms,
                outcome.rate,
            )
        case ApprovalPending():
            return outcome
        case Refused():
            # Details an action adds must not overwrite the documented "error" and "message".
            extra = {k: v for k, v in outcome.extra.items() if k not in _RESERVED_FIELDS}
            extra = extra if _is_json(extra) else {}
            return Refused(
                outcome.code, scrub(outcome.message, secrets), scrub(extra, secrets), outcome.rate
            )
