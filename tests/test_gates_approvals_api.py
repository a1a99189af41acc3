"""`/api/v1/approvals`: the inbox (filters, pagination), reading one, and deciding by API key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest

from test_api_auth import add_key, add_workspace, bearer
from test_gates_execute import Gates, error, gates_fixture, pending  # noqa: F401
from test_gates_idempotency import expire
from treadle.clock import iso, utcnow
from treadle.engine import approvals as approvals_engine
from treadle.engine.approvals import ApprovalRequired, GatePass
from treadle.engine.policies import CallFacts
from treadle.store import schema
from treadle.store.gates import Approval

pytestmark = pytest.mark.anyio

APPROVAL_FIELDS = {
    "id",
    "orgId",
    "workspaceId",
    "policyId",
    "status",
    "source",
    "integrationName",
    "integrationAlias",
    "actionName",
    "endUserId",
    "inputPreview",
    "reason",
    "decidedBy",
    "decidedAt",
    "executedAt",
    "expiresAt",
    "createdAt",
}


async def ask(gates: Gates, **input: Any) -> str:
    """One pending approval; its ID."""
    approval = pending(await gates.send({"to": "a@example.com", **input}))
    approval_id: str = approval["id"]
    return approval_id


async def listed(gates: Gates, **params: Any) -> list[str]:
    response = await gates.api.get("/approvals", params=params)
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["approvals"]]


async def set_created(gates: Gates, approval_id: str, created_at: str) -> None:
    table = schema.approvals
    async with gates.gateway.store.db.write("test") as txn:
        await txn.conn.execute(
            table.update().where(table.c.id == approval_id).values(created_at=created_at)
        )


async def key_actor(gates: Gates, token: str) -> str:
    """The actor an API key's decisions are recorded under."""
    store = gates.gateway.store
    found = await store.api_keys.authenticate(token)
    assert found is not None
    return f"api_key:{found.id}"


# -- reading ----------------------------------------------------------------------------------


async def test_an_approval_shows_what_was_asked(gates: Gates) -> None:
    policy = (await gates.policy())["policy"]
    approval_id = await ask(gates, amount=12, password="hunter2")
    response = await gates.api.get(f"/approvals/{approval_id}")
    assert response.status_code == 200
    approval = response.json()["approval"]
    assert set(approval) == APPROVAL_FIELDS
    assert approval["status"] == "pending"
    assert approval["policyId"] == policy["id"]
    assert approval["workspaceId"] == gates.api.workspace_id
    assert approval["source"] == "rest"
    assert (approval["integrationName"], approval["integrationAlias"], approval["actionName"]) == (
        "outbox",
        "mailer",
        "send",
    )
    assert approval["inputPreview"] == {
        "to": "a@example.com",
        "amount": 12,
        "password": "[redacted]",
    }
    assert "hunter2" not in response.text
    assert approval["decidedBy"] is None
    assert approval["executedAt"] is None


async def test_an_unknown_approval_is_not_found(gates: Gates) -> None:
    error(await gates.api.get("/approvals/apr_00000000000000000000000000000000"), 404, "NOT_FOUND")
    missing = "/approvals/apr_00000000000000000000000000000000/approve"
    error(await gates.api.post(missing, {}), 404, "NOT_FOUND")


async def test_the_list_is_newest_first_and_filtered_by_status(gates: Gates) -> None:
    await gates.policy()
    first, second, third = [await ask(gates, text=str(n)) for n in range(3)]
    await set_created(gates, first, "2026-01-01T00:00:00.000Z")
    await set_created(gates, second, "2026-02-01T00:00:00.000Z")
    await set_created(gates, third, "2026-03-01T00:00:00.000Z")
    await gates.decide(second, "approve")
    await gates.decide(third, "reject")
    assert await listed(gates) == [third, second, first]
    assert await listed(gates, status="pending") == [first]
    assert await listed(gates, status="approved") == [second]
    assert await listed(gates, status="rejected") == [third]
    assert await listed(gates, status="expired") == []


async def test_the_list_is_filtered_by_time(gates: Gates) -> None:
    await gates.policy()
    january, february, march = [await ask(gates, text=str(n)) for n in range(3)]
    await set_created(gates, january, "2026-01-01T00:00:00.000Z")
    await set_created(gates, february, "2026-02-01T00:00:00.000Z")
    await set_created(gates, march, "2026-03-01T00:00:00.000Z")
    assert await listed(gates, since="2026-01-15T00:00:00Z") == [march, february]
    assert await listed(gates, until="2026-02-15T00:00:00Z") == [february, january]
    window = {"since": "2026-02-01T00:00:00.000Z", "until": "2026-03-01T00:00:00.000Z"}
    assert await listed(gates, **window) == [february]


async def test_the_list_is_filtered_by_workspace(gates: Gates) -> None:
    await gates.policy(workspaceId=None)
    mine = await ask(gates)
    other = await add_workspace(gates.api)
    configured = await gates.api.post(
        f"/workspaces/{other}/integrations",
        {"integrationName": "outbox", "connectionStrategy": "fixed", "integrationAlias": "mailer"},
    )
    assert configured.status_code == 201, configured.text
    theirs = pending(await gates.send({"to": "b@example.com"}, workspaceId=other))["id"]
    assert set(await listed(gates)) == {mine, theirs}
    assert await listed(gates, workspaceId=gates.api.workspace_id) == [mine]
    assert await listed(gates, workspaceId=other) == [theirs]

    token = await add_key(gates.api, workspace_id=gates.api.workspace_id)
    scoped = await gates.api.get("/approvals", headers=bearer(token))
    assert [a["id"] for a in scoped.json()["approvals"]] == [mine]
    error(await gates.api.get(f"/approvals/{theirs}", headers=bearer(token)), 403, "SCOPE_DENIED")
    denied = await gates.api.post(f"/approvals/{theirs}/approve", {}, headers=bearer(token))
    error(denied, 403, "SCOPE_DENIED")
    assert (await gates.approval(theirs))["status"] == "pending"


async def test_the_list_pages_with_a_cursor(gates: Gates) -> None:
    await gates.policy()
    created = [await ask(gates, text=str(n)) for n in range(5)]
    # Two share a timestamp: the cursor must still neither skip nor repeat one.
    for approval_id, moment in zip(
        created,
        ["01", "02", "02", "03", "04"],
        strict=True,
    ):
        await set_created(gates, approval_id, f"2026-01-{moment}T00:00:00.000Z")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await gates.api.get("/approvals", params=params)).json()
        pages += 1
        assert len(page["approvals"]) <= 2
        seen += [a["id"] for a in page["approvals"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))
    assert seen[0] == created[4]
    assert seen[-1] == created[0]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "maybe"},
        {"since": "last tuesday"},
        {"until": "2026-13-01"},
        {"cursor": "not a cursor!"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"limit": "²"},
    ],
)
async def test_bad_list_parameters_are_refused(gates: Gates, params: dict[str, str]) -> None:
    error(await gates.api.get("/approvals", params=params), 400, "VALIDATION_ERROR")


async def test_the_list_shows_timed_out_approvals_as_decided(gates: Gates) -> None:
    await gates.policy(timeoutSeconds=60, defaultOnTimeout="expire")
    late = await ask(gates, text="late")
    waiting = await ask(gates, text="waiting")
    await expire(gates, late)
    assert await listed(gates, status="pending") == [waiting]
    assert await listed(gates, status="expired") == [late]
    response = (await gates.api.get("/approvals")).json()["approvals"]
    assert {a["id"]: a["status"] for a in response} == {late: "expired", waiting: "pending"}


# -- deciding -------------------------------------------------------------------------------


@pytest.mark.parametrize(("verb", "status"), [("approve", "approved"), ("reject", "rejected")])
async def test_a_decision_is_recorded_with_its_reason_and_who_made_it(
    gates: Gates, verb: str, status: str
) -> None:
    await gates.policy()
    approval_id = await ask(gates)
    response = await gates.decide(approval_id, verb, "checked with finance")
    assert response.status_code == 200, response.text
    decided = response.json()["approval"]
    assert decided["status"] == status
    assert decided["reason"] == "checked with finance"
    assert decided["decidedBy"] == await key_actor(gates, gates.reviewer)
    assert decided["decidedAt"] is not None
    assert await gates.approval(approval_id) == decided


async def test_a_decision_without_a_body_is_accepted(gates: Gates) -> None:
    await gates.policy()
    approval_id = await ask(gates)
    response = await gates.api.post(
        f"/approvals/{approval_id}/approve", headers=bearer(gates.reviewer)
    )
    assert response.status_code == 200, response.text
    assert response.json()["approval"]["reason"] is None


@pytest.mark.parametrize(
    ("first", "second"),
    [("approve", "approve"), ("approve", "reject"), ("reject", "approve"), ("reject", "reject")],
)
async def test_decisions_are_final(gates: Gates, first: str, second: str) -> None:
    await gates.policy()
    approval_id = await ask(gates)
    assert (await gates.decide(approval_id, first)).status_code == 200
    before = await gates.approval(approval_id)
    error(await gates.decide(approval_id, second), 409, "APPROVAL_NOT_PENDING")
    assert await gates.approval(approval_id) == before


async def test_concurrent_decisions_let_exactly_one_win(gates: Gates) -> None:
    await gates.policy()
    approval_id = await ask(gates)
    answers: list[httpx2.Response] = []

    async def decide(verb: str) -> None:
        answers.append(await gates.decide(approval_id, verb))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for verb in ["approve", "reject"] * 3:
                tg.start_soon(decide, verb)
    winners = [a for a in answers if a.status_code == 200]
    assert len(winners) == 1
    assert all(a.json()["error"] == "APPROVAL_NOT_PENDING" for a in answers if a not in winners)
    assert (await gates.approval(approval_id))["status"] == winners[0].json()["approval"]["status"]


@pytest.mark.parametrize(
    "body",
    [{"reason": "x" * 1001}, {"reason": 5}, {"verdict": "yes"}, [1, 2]],
)
async def test_bad_decision_bodies_are_refused(gates: Gates, body: Any) -> None:
    await gates.policy()
    approval_id = await ask(gates)
    response = await gates.api.post(
        f"/approvals/{approval_id}/approve", body, headers=bearer(gates.reviewer)
    )
    error(response, 400, "VALIDATION_ERROR")
    assert (await gates.approval(approval_id))["status"] == "pending"


async def test_decisions_appear_in_the_activity_log(gates: Gates) -> None:
    await gates.policy()
    approved = await ask(gates, text="yes")
    rejected = await ask(gates, text="no")
    await gates.decide(approved, "approve", "fine")
    await gates.decide(rejected, "reject", "too much")
    found = await gates.api.get("/activity", params={"type": "approval_decision"})
    assert found.status_code == 200, found.text
    decisions = {e["targetId"]: e for e in found.json()["activity"]}
    assert all(e["type"] == "approval_decision" for e in decisions.values())
    assert set(decisions) == {approved, rejected}
    actor = await key_actor(gates, gates.reviewer)
    for approval_id, status, reason in [
        (approved, "approved", "fine"),
        (rejected, "rejected", "too much"),
    ]:
        entry = decisions[approval_id]
        assert entry["actor"] == actor
        assert entry["status"] == status
        assert entry["targetType"] == "approval"
        assert entry["workspaceId"] == gates.api.workspace_id
        assert entry["integrationAlias"] == "mailer"
        assert entry["actionName"] == "send"
        assert entry["input"] == {"reason": reason}


async def test_a_timeout_is_recorded_as_a_system_decision(gates: Gates) -> None:
    await gates.policy(timeoutSeconds=60, defaultOnTimeout="reject")
    approval_id = await ask(gates)
    await expire(gates, approval_id)
    assert (await gates.approval(approval_id))["status"] == "rejected"
    found = await gates.api.get("/activity", params={"type": "approval_decision"})
    decisions = found.json()["activity"]
    assert [(e["targetId"], e["actor"], e["status"]) for e in decisions] == [
        (approval_id, "system:timeout", "rejected")
    ]


async def test_hosted_link_only_approvals_cannot_be_decided_by_api(gates: Gates) -> None:
    await gates.policy(approvalAccessMode="hosted_link_only")
    approval_id = await ask(gates)
    error(await gates.decide(approval_id, "approve"), 403, "FORBIDDEN")
    error(await gates.decide(approval_id, "reject"), 403, "FORBIDDEN")
    assert (await gates.approval(approval_id))["status"] == "pending"


async def test_the_key_that_asked_cannot_approve_its_own_request(gates: Gates) -> None:
    await gates.policy()
    approval_id = await ask(gates)
    own = gates.api.api_key
    error(await gates.decide(approval_id, "approve", token=own), 403, "FORBIDDEN")
    assert (await gates.approval(approval_id))["status"] == "pending"
    assert (await gates.decide(approval_id, "reject", token=own)).status_code == 200


async def test_self_approval_is_allowed_when_the_policy_says_so(gates: Gates) -> None:
    await gates.policy(allowSelfApproval=True)
    approval_id = await ask(gates)
    decided = await gates.decide(approval_id, "approve", token=gates.api.api_key)
    assert decided.status_code == 200, decided.text
    assert decided.json()["approval"]["decidedBy"] == await key_actor(gates, gates.api.api_key)


# -- the desk: waiting for a decision, and MCP's derived keys -------------------------------


async def stored(gates: Gates, approval_id: str) -> Approval:
    found = await gates.gateway.store.approvals.get(approval_id)
    assert found is not None
    return found


async def test_a_waiting_call_is_woken_at_once_by_a_decision(
    gates: Gates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approvals_engine, "POLL_SECONDS", 60.0)  # only the wake-up can end it
    await gates.policy()
    approval = await stored(gates, await ask(gates))
    outcome: list[Approval] = []

    async def wait() -> None:
        deadline = anyio.current_time() + 30
        outcome.append(await gates.gateway.approvals.wait(approval, deadline))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert (await gates.decide(approval.id, "approve")).status_code == 200
    assert outcome[0].status == "approved"


async def test_waiting_ends_at_the_deadline_with_the_approval_still_pending(gates: Gates) -> None:
    await gates.policy()
    approval = await stored(gates, await ask(gates))
    with anyio.fail_after(5):
        found = await gates.gateway.approvals.wait(approval, anyio.current_time() + 0.01)
    assert found.status == "pending"


async def test_waiting_on_a_timed_out_approval_returns_the_timeout_outcome(gates: Gates) -> None:
    await gates.policy(timeoutSeconds=60, defaultOnTimeout="reject")
    approval_id = await ask(gates)
    await expire(gates, approval_id)
    with anyio.fail_after(5):
        found = await gates.gateway.approvals.wait(
            await stored(gates, approval_id), anyio.current_time() + 30
        )
    assert found.status == "rejected"


def mcp_call(gates: Gates) -> CallFacts:
    return CallFacts(
        source="mcp_tools",
        workspace_id=gates.api.workspace_id,
        integration_name="outbox",
        integration_alias="mailer",
        action_name="send",
        connection_strategy="fixed",
        end_user_id=None,
        mcp_server_id="srv_test",
        input={"to": "a@example.com"},
    )


async def gate(gates: Gates, key: str) -> GatePass | Approval:
    """What the desk answers an MCP call carrying a derived key: a pass, or the approval."""
    try:
        store = gates.gateway.store
        policies = await store.approval_policies.list(gates.api.org_id, {gates.api.workspace_id})
        return await gates.gateway.approvals.check(
            mcp_call(gates),
            policies,
            org_id=gates.api.org_id,
            actor="mcp_server:srv_test",
            approval_key=key,
            reuse_window=True,
            preview={"to": "a@example.com"},
        )
    except ApprovalRequired as waiting:
        return waiting.approval


async def test_a_derived_key_finds_its_approval_only_inside_the_reuse_window(
    gates: Gates,
) -> None:
    await gates.policy(reuseWindowSeconds=120)
    first = await gate(gates, "derived-1")
    assert isinstance(first, Approval)
    again = await gate(gates, "derived-1")
    assert isinstance(again, Approval)
    assert again.id == first.id
    await gates.decide(first.id, "approve")
    passed = await gate(gates, "derived-1")
    assert isinstance(passed, GatePass)
    assert passed.approval is not None
    assert passed.approval.id == first.id

    await set_created(gates, first.id, iso(utcnow() - timedelta(seconds=121)))
    later = await gate(gates, "derived-1")
    assert isinstance(later, Approval)
    assert later.id != first.id
    assert later.status == "pending"
