"""Idempotency keys on execute (Stripe's semantics) and retries after a Human Gates decision."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy as sa

from test_gates_execute import Gates, error, gates_fixture, open_gates, pending  # noqa: F401
from treadle.app import Gateway
from treadle.catalog import Catalog
from treadle.clock import iso, utcnow
from treadle.engine import ApprovalPending, ExecuteRequest, Outcome, Refused, Source, Succeeded
from treadle.settings import Settings
from treadle.store import schema
from treadle.store.gates import IdempotencyClaim, IdempotencyRecord, IdempotencyRecords

from conftest import client_for

pytestmark = pytest.mark.anyio

MESSAGE = {"to": "ops@example.com", "text": "Refund order 123", "amount": 250}


def replayed(response: httpx2.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


def rerun(response: httpx2.Response) -> bool:
    return response.headers.get("Idempotent-Rerun") == "true"


class Clock:
    """Wall-clock time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def claim_row(gates: Gates, key: str) -> sa.Row[Any]:
    table = schema.idempotency_records
    async with gates.gateway.store.db.read() as conn:
        found = await conn.execute(table.select().where(table.c.key == key))
        return found.one()


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


# -- claims of processes that stopped (leases) ------------------------------------------------


async def test_a_live_owner_keeps_its_claim_and_one_that_stopped_renewing_loses_it(
    gates: Gates,
) -> None:
    """Two processes on one database, one clock: a claim lasts its lease past the last
    renewal; then the same request takes it over (a rerun) and the first owner, should it come
    back, can no longer complete or free the key."""
    clock = Clock()
    db = gates.gateway.store.db
    first = IdempotencyRecords(db, lease=timedelta(seconds=30), clock=clock)
    second = IdempotencyRecords(db, lease=timedelta(seconds=30), clock=clock)
    org = gates.api.org_id
    assert await first.begin(org, "k", "print") == IdempotencyClaim(rerun=False)
    clock.advance(20)
    await first.renew()
    clock.advance(20)  # 40 s after the claim, 20 s after the renewal: still held
    held = await second.begin(org, "k", "print")
    assert isinstance(held, IdempotencyRecord)
    assert held.state == "in_progress"
    refused = await second.begin(org, "k", "another request")
    assert isinstance(refused, IdempotencyRecord)
    assert refused.fingerprint == "print"  # the caller answers IDEMPOTENCY_KEY_MISMATCH
    clock.advance(11)  # the lease ran out: the first owner stopped
    assert await second.begin(org, "k", "print") == IdempotencyClaim(rerun=True)
    await first.complete(org, "k", 200, {"from": "first"})
    await first.release(org, "k")
    assert (await claim_row(gates, "k")).owner == second.owner
    await second.complete(org, "k", 200, {"from": "second"})
    done = await first.begin(org, "k", "print")
    assert done == IdempotencyRecord("print", "completed", 200, {"from": "second"})


async def test_a_claim_without_a_lease_from_before_the_upgrade_counts_as_abandoned(
    gates: Gates,
) -> None:
    now = utcnow()
    async with gates.gateway.store.db.write("test") as txn:
        await txn.conn.execute(
            schema.idempotency_records.insert().values(
                org_id=gates.api.org_id,
                key="old",
                fingerprint="print",
                state="in_progress",
                created_at=iso(now),
                expires_at=iso(now + timedelta(hours=1)),
            )
        )
    claimed = await gates.gateway.store.idempotency.begin(gates.api.org_id, "old", "print")
    assert claimed == IdempotencyClaim(rerun=True)


async def test_a_retry_after_the_first_attempts_process_stopped_runs_again_and_says_so(
    settings: Settings,
) -> None:
    """`first` claims the key and then stops renewing (its lease is a millisecond and
    nothing renews it), as a killed process would; `second`, another process on the same
    database, gets the retry."""
    stopped = dataclasses.replace(settings, idempotency_lease_seconds=0.001)
    async with open_gates(stopped) as gates:
        second = await Gateway.open(settings, catalog=Catalog([gates.kit.integration()]))
        try:
            async with client_for(second, gates.api.api_key) as client:
                answers: dict[str, httpx2.Response] = {}

                async def attempt(name: str, send: Any) -> None:
                    answers[name] = await send()

                body = {
                    "workspaceId": gates.api.workspace_id,
                    "integrationName": "outbox",
                    "integrationAlias": "mailer",
                    "actionName": "hold",
                    "input": MESSAGE,
                    "idempotencyKey": "slow",
                }
                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(
                            attempt, "first", lambda: gates.api.post("/actions/execute", body)
                        )
                        await gates.kit.held.wait()
                        tg.start_soon(
                            attempt,
                            "second",
                            lambda: client.post("/api/v1/actions/execute", json=body),
                        )
                        while (
                            await claim_row(gates, "slow")
                        ).owner != second.store.idempotency.owner:
                            pass  # each look is a database read: the retry has taken over
                        gates.kit.release.set()
        finally:
            await second.close()
        retried = answers["second"]
        assert retried.status_code == 200, retried.text
        assert rerun(retried)
        assert not replayed(retried)
        assert answers["first"].status_code == 200  # it ran, but no longer held the key
        assert len(gates.kit.runs) == 2  # at least once: the action ran for both attempts
        again = await gates.send(MESSAGE, action="hold", idempotencyKey="slow")
        assert replayed(again)
        assert not rerun(again)
        assert again.json() == retried.json()


async def test_a_running_claim_is_renewed_past_its_first_lease(settings: Settings) -> None:
    async with open_gates(dataclasses.replace(settings, idempotency_lease_seconds=0.6)) as gates:
        answers: list[httpx2.Response] = []

        async def first() -> None:
            answers.append(await gates.send(MESSAGE, action="hold", idempotencyKey="slow"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as background:
                background.start_soon(gates.gateway.run_background)
                async with anyio.create_task_group() as calls:
                    calls.start_soon(first)
                    await gates.kit.held.wait()
                    lease = (await claim_row(gates, "slow")).lease_expires_at
                    # Look (each look a read) until the first lease has run out and a
                    # renewal holds the claim beyond now.
                    while True:
                        renewed = (await claim_row(gates, "slow")).lease_expires_at
                        now = iso(utcnow())
                        if now > lease and renewed > now:
                            break
                    retry = await gates.send(MESSAGE, action="hold", idempotencyKey="slow")
                    error(retry, 409, "IDEMPOTENCY_KEY_IN_USE")
                    gates.kit.release.set()
                background.cancel_scope.cancel()
        assert answers[0].status_code == 200
        assert not rerun(answers[0])
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
