"""Idempotency keys on execute (Stripe's semantics) and retries after a Human Gates decision."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest

from test_gates_execute import Gates, error, gates_fixture, pending  # noqa: F401
from treadle.clock import iso, utcnow
from treadle.engine import ApprovalPending, ExecuteRequest, Outcome, Refused, Source, Succeeded
from treadle.store import schema

pytestmark = pytest.mark.anyio

MESSAGE = {"to": "ops@example.com", "text": "Refund order 123", "amount": 250}


def replayed(response: httpx2.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


async def expire(gates: Gates, approval_id: str) -> None:
    """Move an approval's deadline into the past, as if its timeout had run out."""
    table = schema.approvals
    async with gates.gateway.store.db.write("test") as txn:
        await txn.conn.execute(
            table.update()
            .where(table.c.id == approval_id)
            .values(expires_at=iso(utcnow() - timedelta(seconds=1)))
        )


# -- plain idempotency -----------------------------------------------------------------------


async def test_a_completed_response_is_replayed_without_running_again(gates: Gates) -> None:
    first = await gates.send(MESSAGE, idempotencyKey="refund-123")
    assert first.status_code == 200, first.text
    assert not replayed(first)
    second = await gates.send(MESSAGE, idempotencyKey="refund-123")
    assert second.status_code == 200
    assert second.json() == first.json()
    assert replayed(second)
    assert len(gates.kit.runs) == 1


async def test_the_same_key_with_a_different_request_is_refused(gates: Gates) -> None:
    assert (await gates.send(MESSAGE, idempotencyKey="refund-123")).status_code == 200
    changed = {**MESSAGE, "amount": 9999}
    error(await gates.send(changed, idempotencyKey="refund-123"), 422, "IDEMPOTENCY_KEY_MISMATCH")
    other_alias = await gates.send(MESSAGE, idempotencyKey="refund-123", integrationAlias="bulk")
    error(other_alias, 422, "IDEMPOTENCY_KEY_MISMATCH")
    assert len(gates.kit.runs) == 1


async def test_the_same_key_while_the_first_request_runs_is_in_use(gates: Gates) -> None:
    answers: list[httpx2.Response] = []

    async def first() -> None:
        answers.append(await gates.send(MESSAGE, action="hold", idempotencyKey="slow"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await gates.kit.held.wait()
            second = await gates.send(MESSAGE, action="hold", idempotencyKey="slow")
            error(second, 409, "IDEMPOTENCY_KEY_IN_USE")
            gates.kit.release.set()
    assert answers[0].status_code == 200, answers[0].text
    third = await gates.send(MESSAGE, action="hold", idempotencyKey="slow")
    assert replayed(third)
    assert third.json() == answers[0].json()
    assert len(gates.kit.runs) == 1


async def test_different_keys_run_separately(gates: Gates) -> None:
    await gates.send(MESSAGE, idempotencyKey="one")
    await gates.send(MESSAGE, idempotencyKey="two")
    assert len(gates.kit.runs) == 2


async def test_a_refused_request_leaves_its_key_usable(gates: Gates) -> None:
    policy = (await gates.policy(decision="block"))["policy"]
    error(await gates.send(MESSAGE, idempotencyKey="k-1"), 403, "ACTION_BLOCKED")
    await gates.api.delete(f"/approval-policies/{policy['id']}")
    response = await gates.send(MESSAGE, idempotencyKey="k-1")
    assert response.status_code == 200, response.text
    assert not replayed(response)


@pytest.mark.parametrize(("length", "status"), [(1, 200), (255, 200), (256, 400)])
async def test_keys_may_be_up_to_255_characters(gates: Gates, length: int, status: int) -> None:
    response = await gates.send(MESSAGE, idempotencyKey="k" * length)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"] == "VALIDATION_ERROR"
        assert gates.kit.runs == []


@pytest.mark.parametrize("key", ["", "line\nbreak", 123])
async def test_malformed_keys_are_refused(gates: Gates, key: Any) -> None:
    error(await gates.send(MESSAGE, idempotencyKey=key), 400, "VALIDATION_ERROR")
    assert gates.kit.runs == []


# -- retries after a Human Gates answer -------------------------------------------------------


async def test_a_retry_before_anyone_decided_returns_the_same_pending_approval(
    gates: Gates,
) -> None:
    await gates.policy()
    first = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    again = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    assert again["id"] == first["id"]
    listed = (await gates.api.get("/approvals")).json()["approvals"]
    assert [a["id"] for a in listed] == [first["id"]]
    assert gates.kit.runs == []


async def test_a_pending_key_reused_for_a_different_request_is_refused(gates: Gates) -> None:
    await gates.policy()
    pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    changed = {**MESSAGE, "to": "attacker@evil.example"}
    error(await gates.send(changed, idempotencyKey="refund-123"), 422, "IDEMPOTENCY_KEY_MISMATCH")


async def test_a_key_waiting_for_approval_stays_bound_to_its_request(gates: Gates) -> None:
    """After a 202 the key still names that request: another request with it is refused even
    when no policy would gate that one, and the approved request still runs with it later."""
    await gates.policy(rules={"conditions": [{"path": "amount", "op": "gt", "value": 100}]})
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    small = {**MESSAGE, "amount": 5}
    error(await gates.send(small, idempotencyKey="refund-123"), 422, "IDEMPOTENCY_KEY_MISMATCH")
    assert gates.kit.runs == []
    await gates.decide(approval["id"], "approve")
    ran = await gates.send(MESSAGE, idempotencyKey="refund-123")
    assert ran.status_code == 200, ran.text
    assert gates.kit.runs == [MESSAGE]


async def test_a_rejected_key_stays_bound_to_its_request(gates: Gates) -> None:
    await gates.policy(rules={"conditions": [{"path": "amount", "op": "gt", "value": 100}]})
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await gates.decide(approval["id"], "reject")
    error(await gates.send(MESSAGE, idempotencyKey="refund-123"), 403, "APPROVAL_REJECTED")
    small = {**MESSAGE, "amount": 5}
    error(await gates.send(small, idempotencyKey="refund-123"), 422, "IDEMPOTENCY_KEY_MISMATCH")
    assert gates.kit.runs == []


async def test_after_approval_the_retry_runs_once_and_is_then_replayed(gates: Gates) -> None:
    await gates.policy()
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    assert (await gates.decide(approval["id"], "approve")).status_code == 200
    ran = await gates.send(MESSAGE, idempotencyKey="refund-123")
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"] == {"sent": True, "run": 1}
    again = await gates.send(MESSAGE, idempotencyKey="refund-123")
    assert replayed(again)
    assert again.json() == ran.json()
    assert gates.kit.runs == [MESSAGE]
    assert (await gates.approval(approval["id"]))["executedAt"] is not None


async def test_after_approval_a_retry_with_other_input_does_not_run(gates: Gates) -> None:
    await gates.policy()
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await gates.decide(approval["id"], "approve")
    changed = {**MESSAGE, "amount": 25_000}
    error(await gates.send(changed, idempotencyKey="refund-123"), 422, "IDEMPOTENCY_KEY_MISMATCH")
    assert gates.kit.runs == []


async def test_concurrent_retries_after_approval_run_the_action_exactly_once(
    gates: Gates,
) -> None:
    await gates.policy()
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await gates.decide(approval["id"], "approve")
    answers: list[httpx2.Response] = []

    async def retry() -> None:
        answers.append(await gates.send(MESSAGE, idempotencyKey="refund-123"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(retry)
    assert len(gates.kit.runs) == 1
    fresh = [a for a in answers if a.status_code == 200 and not replayed(a)]
    assert len(fresh) == 1
    for answer in answers:
        if answer is fresh[0]:
            continue
        if answer.status_code == 200:
            assert replayed(answer)
            assert answer.json() == fresh[0].json()
        else:
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"] in ("IDEMPOTENCY_KEY_IN_USE", "APPROVAL_NOT_PENDING")


async def test_a_retry_of_a_rejected_approval_is_refused(gates: Gates) -> None:
    await gates.policy()
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await gates.decide(approval["id"], "reject", "not this one")
    body = error(await gates.send(MESSAGE, idempotencyKey="refund-123"), 403, "APPROVAL_REJECTED")
    assert body["approvalId"] == approval["id"]
    error(await gates.send(MESSAGE, idempotencyKey="refund-123"), 403, "APPROVAL_REJECTED")
    assert gates.kit.runs == []


async def test_a_retry_after_the_timeout_is_expired_when_the_policy_says_expire(
    gates: Gates,
) -> None:
    await gates.policy(timeoutSeconds=60, defaultOnTimeout="expire")
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await expire(gates, approval["id"])
    body = error(await gates.send(MESSAGE, idempotencyKey="refund-123"), 403, "APPROVAL_EXPIRED")
    assert body["approvalId"] == approval["id"]
    found = await gates.approval(approval["id"])
    assert found["status"] == "expired"
    assert found["decidedBy"] == "system:timeout"
    assert gates.kit.runs == []


async def test_a_retry_after_the_timeout_is_rejected_when_the_policy_says_reject(
    gates: Gates,
) -> None:
    await gates.policy(timeoutSeconds=60, defaultOnTimeout="reject")
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await expire(gates, approval["id"])
    error(await gates.send(MESSAGE, idempotencyKey="refund-123"), 403, "APPROVAL_REJECTED")
    assert (await gates.approval(approval["id"]))["status"] == "rejected"
    assert gates.kit.runs == []


async def test_an_expired_approval_can_no_longer_be_approved(gates: Gates) -> None:
    await gates.policy(timeoutSeconds=60)
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await expire(gates, approval["id"])
    error(await gates.decide(approval["id"], "approve"), 409, "APPROVAL_NOT_PENDING")
    error(await gates.send(MESSAGE, idempotencyKey="refund-123"), 403, "APPROVAL_EXPIRED")
    assert gates.kit.runs == []


async def test_a_blocked_retry_does_not_consume_the_approval(gates: Gates) -> None:
    """An approved call refused before it runs (here: a block policy added meanwhile) keeps
    its one run for later."""
    await gates.policy(priority=10)
    approval = pending(await gates.send(MESSAGE, idempotencyKey="refund-123"))
    await gates.decide(approval["id"], "approve")
    block = (await gates.policy(name="freeze", decision="block", priority=1))["policy"]
    error(await gates.send(MESSAGE, idempotencyKey="refund-123"), 403, "ACTION_BLOCKED")
    await gates.api.delete(f"/approval-policies/{block['id']}")
    ran = await gates.send(MESSAGE, idempotencyKey="refund-123")
    assert ran.status_code == 200, ran.text
    assert len(gates.kit.runs) == 1


async def test_concurrent_mcp_retries_of_an_approved_call_run_it_once(gates: Gates) -> None:
    """MCP has no idempotency records: the approval's single run is all that stands between
    eight identical retries and eight runs."""
    await gates.policy()
    call = ExecuteRequest(
        org_id=gates.api.org_id,
        workspace_id=gates.api.workspace_id,
        integration_name="outbox",
        action_name="send",
        source=Source.MCP_TOOLS,
        actor="mcp_server:srv_test",
        input=MESSAGE,
        integration_alias="mailer",
        approval_key="derived-key-1",
        approval_reuse_window=True,
        mcp_server_id="srv_test",
    )
    first = await gates.gateway.executor.execute(call)
    assert isinstance(first, ApprovalPending)
    await gates.decide(first.approval.id, "approve")
    outcomes: list[Outcome] = []

    async def retry() -> None:
        outcomes.append(await gates.gateway.executor.execute(call))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(retry)
    assert len(gates.kit.runs) == 1
    assert sum(isinstance(o, Succeeded) for o in outcomes) == 1
    for outcome in outcomes:
        if not isinstance(outcome, Succeeded):
            assert isinstance(outcome, Refused | ApprovalPending), outcome
