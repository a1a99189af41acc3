"""Human Gates at execute: which policy governs a call, and what each decision answers.

Also the kit the other `test_gates_*` modules share: a gateway whose only integration,
`outbox`, counts the runs of its actions (`send` returns at once, `hold` waits until the test
releases it), configured twice in the default workspace (aliases `mailer` and `bulk`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.clock import parse_iso
from treadle.http_app import build_http_app
from treadle.settings import Settings

from conftest import Api

pytestmark = pytest.mark.anyio

BASE_URL = "http://treadle.test"
APPROVAL_ID = re.compile(r"^apr_[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# Values that must never be shown to a reviewer or sent to a webhook.
PASSWORD = "hunter2-correct-horse-5f1c"
API_KEY = "sk-live-9d27c0ffee4b1e"
ENFORCED = "enforced-reply-to-3a8e@corp.example"

_SEND_SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string"},
        "text": {"type": "string"},
        "amount": {"type": "number"},
        "replyTo": {"type": "string"},
        "password": {"type": "string"},
        "apiKey": {"type": "string"},
    },
}


@dataclass
class Kit:
    """Counts what the `outbox` actions ran with; `hold` waits for `release`."""

    runs: list[JSONObject] = field(default_factory=list)
    held: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)

    async def _send(self, _ctx: ActionContext, data: JSONObject) -> JSONObject:
        self.runs.append(data)
        return {"sent": True, "run": len(self.runs)}

    async def _hold(self, _ctx: ActionContext, data: JSONObject) -> JSONObject:
        self.held.set()
        await self.release.wait()
        self.runs.append(data)
        return {"sent": True, "run": len(self.runs)}

    def integration(self) -> Integration:
        return Integration(
            name="outbox",
            display_name="Outbox",
            description="Test-only: counts its runs.",
            auth_kind=AuthKind.NONE,
            actions=(
                Action("send", "Send", "Send a message.", _SEND_SCHEMA, self._send),
                Action("hold", "Hold", "Wait until released.", _SEND_SCHEMA, self._hold),
            ),
        )


@dataclass
class Gates:
    api: Api
    kit: Kit
    transport: httpx2.ASGITransport  # the app, for clients without the API key (browsers)
    reviewer: str  # another org-wide API key: the person deciding, not the caller asking

    @property
    def gateway(self) -> Gateway:
        return self.api.gateway

    async def policy(self, **fields: Any) -> dict[str, Any]:
        """Create a policy (workspace-scoped unless told) and return the whole 201 body."""
        body = {
            "workspaceId": self.api.workspace_id,
            "name": "Gate outbox",
            "decision": "require_approval",
            **fields,
        }
        response = await self.api.post("/approval-policies", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def send(
        self, input: JSONObject | None = None, *, action: str = "send", **body: Any
    ) -> httpx2.Response:
        body.setdefault("integrationAlias", "mailer")
        return await self.api.execute(
            integrationName="outbox", actionName=action, input=input or {}, **body
        )

    async def decide(
        self, approval_id: str, verb: str, reason: str | None = None, *, token: str | None = None
    ) -> httpx2.Response:
        """Decide by API, as the reviewer unless another key's token is given."""
        return await self.api.post(
            f"/approvals/{approval_id}/{verb}",
            {} if reason is None else {"reason": reason},
            headers={"Authorization": f"Bearer {token or self.reviewer}"},
        )

    async def approval(self, approval_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/approvals/{approval_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["approval"]
        return found


def pending(response: httpx2.Response) -> dict[str, Any]:
    """The `approval` object of a 202 approval_required answer."""
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["success"] is False
    assert body["status"] == "approval_required"
    approval: dict[str, Any] = body["approval"]
    return approval


def error(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str)
    return body


@asynccontextmanager
async def open_gates(settings: Settings) -> AsyncIterator[Gates]:
    kit = Kit()
    settings = dataclasses.replace(settings, public_url=BASE_URL, webhooks_allow_private=True)
    gateway = await Gateway.open(settings, catalog=Catalog([kit.integration()]))
    try:
        init = await initialise(gateway.store, settings.data_dir)
        assert init.api_key is not None
        transport = httpx2.ASGITransport(app=build_http_app(gateway))
        async with httpx2.AsyncClient(
            transport=transport,
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {init.api_key}"},
        ) as client:
            api = Api(client, gateway, init.org_id, init.workspace_id, init.api_key)
            await api.configure("outbox", integrationAlias="mailer")
            await api.configure("outbox", integrationAlias="bulk")
            async with gateway.store.db.write("test") as txn:
                _key, reviewer = await gateway.store.api_keys.create(
                    txn, init.org_id, name="reviewer"
                )
            yield Gates(api, kit, transport, reviewer)
    finally:
        await gateway.close()


@pytest.fixture(name="gates")
async def gates_fixture(settings: Settings) -> AsyncIterator[Gates]:
    async with open_gates(settings) as opened:
        yield opened


# -- require_approval ----------------------------------------------------------------------


async def test_require_approval_answers_202_with_exactly_the_documented_body(
    gates: Gates,
) -> None:
    await gates.policy()
    response = await gates.send({"to": "ops@example.com"}, idempotencyKey="order-123-send")
    approval = pending(response)
    assert set(response.json()) == {"success", "status", "approval"}
    assert set(approval) == {
        "id",
        "status",
        "approvalUrl",
        "hostedApprovalUrl",
        "expiresAt",
        "retry",
    }
    assert APPROVAL_ID.match(approval["id"])
    assert approval["status"] == "pending"
    assert approval["retry"] == {"idempotencyKey": "order-123-send"}
    assert TIMESTAMP.match(approval["expiresAt"])
    assert approval["hostedApprovalUrl"] == approval["approvalUrl"]
    assert re.fullmatch(
        rf"{BASE_URL}/approve/{approval['id']}\?token=apr_link_v1_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
        approval["approvalUrl"],
    )
    assert gates.kit.runs == []


async def test_require_approval_without_a_key_hands_out_a_generated_retry_key(
    gates: Gates,
) -> None:
    await gates.policy()
    first = pending(await gates.send({"to": "a@example.com"}))
    second = pending(await gates.send({"to": "a@example.com"}))
    assert first["retry"]["idempotencyKey"]
    assert first["id"] != second["id"]
    assert first["retry"]["idempotencyKey"] != second["retry"]["idempotencyKey"]


async def test_the_approval_expires_after_the_policy_timeout(gates: Gates) -> None:
    await gates.policy(timeoutSeconds=600)
    approval = pending(await gates.send({"to": "a@example.com"}))
    stored = await gates.approval(approval["id"])
    created = stored["createdAt"]
    assert (parse_iso(approval["expiresAt"]) - parse_iso(created)).total_seconds() == 600


async def test_a_generated_retry_key_runs_the_approved_call_once(gates: Gates) -> None:
    await gates.policy()
    approval = pending(await gates.send({"to": "a@example.com"}))
    assert (await gates.decide(approval["id"], "approve")).status_code == 200
    key = approval["retry"]["idempotencyKey"]
    response = await gates.send({"to": "a@example.com"}, idempotencyKey=key)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"sent": True, "run": 1}
    assert gates.kit.runs == [{"to": "a@example.com"}]


async def test_dashboard_only_policies_hand_out_no_hosted_link(gates: Gates) -> None:
    await gates.policy(approvalAccessMode="dashboard_only")
    approval = pending(await gates.send({"to": "a@example.com"}))
    assert approval["approvalUrl"] is None
    assert approval["hostedApprovalUrl"] is None


async def test_an_ungated_call_runs_at_once(gates: Gates) -> None:
    await gates.policy(integrationAliases=["bulk"])
    response = await gates.send({"to": "a@example.com"})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"sent": True, "run": 1}


async def test_a_pending_approval_is_recorded_in_the_activity_log(gates: Gates) -> None:
    await gates.policy()
    pending(await gates.send({"to": "a@example.com"}))
    params = {"type": "action_execution", "status": "approval_pending"}
    activity = (await gates.api.get("/activity", params=params)).json()
    assert [entry["status"] for entry in activity["activity"]] == ["approval_pending"]


# -- block, notify_only, auto_approve -------------------------------------------------------


async def test_block_refuses_with_403_naming_the_policy(gates: Gates) -> None:
    created = await gates.policy(name="No mail on Fridays", decision="block")
    body = error(await gates.send({"to": "a@example.com"}), 403, "ACTION_BLOCKED")
    assert body["policyId"] == created["policy"]["id"]
    assert body["policyName"] == "No mail on Fridays"
    assert gates.kit.runs == []


async def test_notify_only_runs_the_action_without_waiting(gates: Gates) -> None:
    await gates.policy(decision="notify_only")
    response = await gates.send({"to": "a@example.com"})
    assert response.status_code == 200, response.text
    assert gates.kit.runs == [{"to": "a@example.com"}]
    listed = (await gates.api.get("/approvals")).json()
    assert listed["approvals"] == []


async def test_auto_approve_runs_the_action(gates: Gates) -> None:
    await gates.policy(decision="auto_approve")
    response = await gates.send({"to": "a@example.com"})
    assert response.status_code == 200, response.text
    assert gates.kit.runs == [{"to": "a@example.com"}]


# -- which policy governs -------------------------------------------------------------------


async def test_lower_priority_number_wins(gates: Gates) -> None:
    await gates.policy(name="allow", decision="auto_approve", priority=10)
    await gates.policy(name="block", decision="block", priority=20)
    assert (await gates.send({"to": "a@example.com"})).status_code == 200


async def test_a_priority_tie_goes_to_the_most_severe_decision(gates: Gates) -> None:
    await gates.policy(name="allow", decision="auto_approve", priority=10)
    await gates.policy(name="notify", decision="notify_only", priority=10)
    await gates.policy(name="ask", decision="require_approval", priority=10)
    pending(await gates.send({"to": "a@example.com"}))
    await gates.policy(name="block", decision="block", priority=10)
    error(await gates.send({"to": "a@example.com"}), 403, "ACTION_BLOCKED")


async def test_disabled_policies_do_not_govern(gates: Gates) -> None:
    await gates.policy(decision="block", enabled=False)
    assert (await gates.send({"to": "a@example.com"})).status_code == 200


async def test_an_org_wide_policy_governs_every_workspace(gates: Gates) -> None:
    await gates.policy(workspaceId=None, decision="block")
    error(await gates.send({"to": "a@example.com"}), 403, "ACTION_BLOCKED")


async def test_a_policy_of_another_workspace_does_not_govern(gates: Gates) -> None:
    other = await gates.api.post("/workspaces", {"name": "Elsewhere"})
    assert other.status_code == 201, other.text
    await gates.policy(workspaceId=other.json()["workspace"]["id"], decision="block")
    assert (await gates.send({"to": "a@example.com"})).status_code == 200


@pytest.mark.parametrize(
    ("filters", "gated"),
    [
        ({"integrationNames": ["outbox"]}, True),
        ({"integrationNames": ["other-thing"]}, False),
        ({"integrationAliases": ["mailer"]}, True),
        ({"integrationAliases": ["bulk"]}, False),
        ({"actionNames": ["send"]}, True),
        ({"actionNames": ["hold"]}, False),
        ({"sources": ["rest"]}, True),
        ({"sources": ["mcp_tools"]}, False),
        ({"connectionStrategies": ["fixed"]}, True),
        ({"connectionStrategies": ["per_user"]}, False),
        ({"endUserMode": "no_end_user"}, True),
        ({"endUserMode": "end_user_present"}, False),
        ({"endUserMode": "any"}, True),
    ],
)
async def test_filters_decide_whether_a_policy_governs_a_call(
    gates: Gates, filters: dict[str, Any], gated: bool
) -> None:
    await gates.policy(decision="block", **filters)
    response = await gates.send({"to": "a@example.com"})
    assert response.status_code == (403 if gated else 200), response.text


async def test_end_user_present_governs_calls_made_for_an_end_user(gates: Gates) -> None:
    await gates.policy(decision="block", endUserMode="end_user_present")
    error(await gates.send({"to": "a@example.com"}, endUserId="user-1"), 403, "ACTION_BLOCKED")
    assert (await gates.send({"to": "a@example.com"})).status_code == 200


@pytest.mark.parametrize(
    ("condition", "amount", "gated"),
    [
        ({"op": "gt", "value": 100}, 101, True),
        ({"op": "gt", "value": 100}, 100, False),
        ({"op": "gte", "value": 100}, 100, True),
        ({"op": "lt", "value": 10}, 9.5, True),
        ({"op": "lte", "value": 10}, 11, False),
        ({"op": "equals", "value": 42}, 42, True),
        ({"op": "in", "value": [1, 2, 3]}, 2, True),
        ({"op": "in", "value": [1, 2, 3]}, 4, False),
    ],
)
async def test_rules_compare_numbers_in_the_input(
    gates: Gates, condition: dict[str, Any], amount: float, gated: bool
) -> None:
    await gates.policy(decision="block", rules={"conditions": [{"path": "amount", **condition}]})
    response = await gates.send({"amount": amount})
    assert response.status_code == (403 if gated else 200), response.text


async def test_regex_rules_match_text_in_the_input(gates: Gates) -> None:
    rule = {"path": "to", "op": "regex", "value": r"@(?!example\.com$)"}
    await gates.policy(decision="block", rules={"conditions": [rule]})
    assert (await gates.send({"to": "me@example.com"})).status_code == 200
    error(await gates.send({"to": "me@evil.example"}), 403, "ACTION_BLOCKED")


async def test_rules_match_all_conditions_unless_told_any(gates: Gates) -> None:
    conditions = [
        {"path": "amount", "op": "gt", "value": 100},
        {"path": "to", "op": "equals", "value": "cfo@example.com"},
    ]
    await gates.policy(name="all", decision="block", rules={"conditions": conditions})
    assert (await gates.send({"amount": 500, "to": "me@example.com"})).status_code == 200
    error(await gates.send({"amount": 500, "to": "cfo@example.com"}), 403, "ACTION_BLOCKED")
    await gates.policy(
        name="any", decision="block", rules={"match": "any", "conditions": conditions}
    )
    error(await gates.send({"amount": 5, "to": "cfo@example.com"}), 403, "ACTION_BLOCKED")


async def test_rules_see_the_input_after_partials_are_merged(gates: Gates) -> None:
    await gates.policy(
        decision="block", rules={"conditions": [{"path": "amount", "op": "gt", "value": 100}]}
    )
    created = await gates.api.post(
        "/partials",
        {
            "workspaceId": gates.api.workspace_id,
            "integrationName": "outbox",
            "actionName": "send",
            "name": "Big by default",
            "values": {"amount": 500},
            "isDefault": True,
        },
    )
    assert created.status_code == 201, created.text
    error(await gates.send({"to": "a@example.com"}), 403, "ACTION_BLOCKED")
    assert (await gates.send({"to": "a@example.com", "amount": 5})).status_code == 200


async def test_rules_see_enforced_values_over_the_callers_input(gates: Gates) -> None:
    await gates.policy(
        decision="block", rules={"conditions": [{"path": "to", "op": "equals", "value": ENFORCED}]}
    )
    created = await gates.api.post(
        "/partials",
        {
            "workspaceId": gates.api.workspace_id,
            "integrationName": "outbox",
            "name": "Fixed recipient",
            "values": {"to": ENFORCED},
            "enforcedKeys": ["to"],
            "isDefault": True,
        },
    )
    assert created.status_code == 201, created.text
    error(await gates.send({"to": "harmless@example.com"}), 403, "ACTION_BLOCKED")


async def test_rules_follow_nested_key_paths(gates: Gates) -> None:
    await gates.policy(
        decision="block",
        rules={"conditions": [{"path": "meta.tags.0", "op": "equals", "value": "urgent"}]},
    )
    error(await gates.send({"meta": {"tags": ["urgent"]}}), 403, "ACTION_BLOCKED")
    assert (await gates.send({"meta": {"tags": ["later"]}})).status_code == 200
