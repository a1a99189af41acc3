"""REST fuzz: generated requests at every `/api/v1` endpoint, then generated sequences of them.

Properties, for every request: no 5xx; no traceback, server path or stored secret in the body;
every error is `{"error": CODE, "message": sentence, ...}` with a documented code.

The stateless phase draws requests endpoint by endpoint (enumerated from the app's routes, so
a new route is fuzzed automatically) against a fresh two-org world. The stateful phase is a
state machine that creates, changes, uses and deletes resources through the API and checks
after every step that what it created is still there and what it deleted is gone.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from probes.conftest import Live
from probes.generators import SEGMENT_KINDS, Endpoint, FuzzRequest, endpoints, requests
from probes.world import CONNECTION_CANARIES, KNOWN_CODES, Tenant, World, leaks
from treadle.bootstrap import create_org

from conftest import client_for

ENDPOINTS = endpoints()
FUZZ = settings(
    # TREADLE_PROBE_EXAMPLES raises the count for a deeper run by hand; CI keeps it bounded.
    max_examples=int(os.environ.get("TREADLE_PROBE_EXAMPLES", "40")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_answer(response: httpx2.Response, world: World, sent: str) -> None:
    """The properties every answer of the API has, whatever was asked."""
    assert response.status_code < 500, (sent, response.status_code, response.text[:500])
    text = response.text
    assert not leaks(text, world.gateway.settings.data_dir), (sent, text[:500])
    for secret in world.secrets:
        assert secret not in text, (sent, secret)
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert response.headers.get("content-type", "").startswith("application/json"), sent
        body: Any = json.loads(text)
        assert isinstance(body, dict), (sent, text)
        assert body.get("error") in KNOWN_CODES, (sent, text)
        assert isinstance(body.get("message"), str), (sent, text)
        assert body["message"], (sent, text)


async def send(world: World, request: FuzzRequest) -> httpx2.Response:
    return await world.a.client.request(
        request.method,
        f"/api/v1{request.path}",
        params=request.params,
        headers=request.headers,
        content=request.content,
    )


def test_every_route_of_the_app_is_fuzzed() -> None:
    """The enumeration really finds the API (a broken one would fuzz nothing, green)."""
    templates = {endpoint.template for endpoint in ENDPOINTS}
    assert len(templates) >= 20
    assert {"/actions/execute", "/workspaces/{workspace_id}", "/approvals/{id}/approve"} <= (
        templates
    )
    assert all(endpoint.models for endpoint in ENDPOINTS if "POST" in endpoint.methods)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[endpoint.id for endpoint in ENDPOINTS])
def test_generated_requests_never_crash_leak_or_break_the_error_shape(
    live: Live, endpoint: Endpoint
) -> None:
    world = live.world
    keys = [world.a.api_key, world.a.restricted_key, world.b.api_key, world.b.restricted_key]

    pools = world.pools(SEGMENT_KINDS.values())

    @FUZZ
    @given(request=requests(endpoint, world.all_ids(), keys, pools))
    def probe(request: FuzzRequest) -> None:
        response = live.call(send, world, request)
        check_answer(response, world, request.describe())

    probe()


# -- Stateful phase ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Thing:
    """A resource the machine created: where to read it, and the workspace it lives in."""

    kind: str
    id: str
    path: str
    workspace_id: str | None


LISTS = {
    "workspace": ("/workspaces", "workspaces"),
    "connection": ("/connections", "connections"),
    "end_user": ("/end-users", "endUsers"),
    "server": ("/mcp/servers", "servers"),
    "policy": ("/approval-policies", "policies"),
}
NAMES = st.sampled_from(["alpha", "beta", "gamma", "notes", "a b", "Ω"])
ALIASES = st.sampled_from(["notes", "scratch", "web", "my-bot", "my_bot"])
VALUES = st.dictionaries(
    st.sampled_from(["key", "value", "url", "method"]),
    st.one_of(st.text(max_size=8), st.integers(), st.booleans()),
    max_size=3,
)


async def open_tenant(world: World) -> Tenant:
    """A new org of its own for one run of the machine, made the way `treadle org create` does."""
    result = await create_org(world.gateway.store, "machine")
    assert result.api_key is not None
    return Tenant(
        result.org_id,
        result.api_key,
        result.workspace_id,
        client_for(world.gateway, result.api_key),
    )


def machine_for(live: Live) -> type[RuleBasedStateMachine]:
    world = live.world

    class ApiMachine(RuleBasedStateMachine):
        workspaces = Bundle("workspaces")
        things = Bundle("things")

        def __init__(self) -> None:
            super().__init__()
            self.tenant = live.call(open_tenant, world)
            self.alive: dict[str, Thing] = {}

        def teardown(self) -> None:
            live.call(self.tenant.client.aclose)

        def send(
            self, method: str, path: str, body: Any = None, token: str = ""
        ) -> httpx2.Response:
            headers = {"Authorization": f"Bearer {token or self.tenant.api_key}"}
            response = live.call(
                functools.partial(
                    self.tenant.client.request,
                    method,
                    f"/api/v1{path}",
                    json=body,
                    headers=headers,
                )
            )
            check_answer(response, world, f"{method} {path} {body}")
            return response

        def created(
            self, kind: str, response: httpx2.Response, key: str, path: str, ws: str | None
        ) -> Thing | Any:
            if response.status_code != 201:
                # A refusal (duplicate, alias taken, workspace already deleted) creates nothing.
                assert response.status_code in (400, 404, 409), response.text
                return multiple()
            found = response.json()[key]["id"]
            thing = Thing(kind, found, path.format(id=found), ws)
            self.alive[thing.path] = thing
            return thing

        def live_workspace(self, ws: Thing) -> bool:
            return ws.path in self.alive

        @initialize(target=workspaces)
        def default_workspace(self) -> Thing:
            ws = self.tenant.workspace_id
            thing = Thing("workspace", ws, f"/workspaces/{ws}", ws)
            self.alive[thing.path] = thing
            return thing

        @rule(target=workspaces, name=NAMES)
        def create_workspace(self, name: str) -> Thing | Any:
            response = self.send("POST", "/workspaces", {"name": name})
            if response.status_code == 201:
                ws = response.json()["workspace"]["id"]
                thing = Thing("workspace", ws, f"/workspaces/{ws}", ws)
                self.alive[thing.path] = thing
                return thing
            assert response.json()["error"] == "DUPLICATE", response.text
            return multiple()

        @rule(
            target=things,
            ws=workspaces,
            integration=st.sampled_from(["kv-store", "http"]),
            alias=ALIASES,
            strategy=st.sampled_from(["fixed", "per_user", "per_user_with_fallback"]),
        )
        def create_integration(
            self, ws: Thing, integration: str, alias: str, strategy: str
        ) -> Thing | Any:
            body = {
                "integrationName": integration,
                "integrationAlias": alias,
                "connectionStrategy": strategy,
            }
            if integration == "kv-store":
                body["settings"] = {"persistence": {"scope": "workspace"}}
            response = self.send("POST", f"/workspaces/{ws.id}/integrations", body)
            return self.created(
                "integration",
                response,
                "integration",
                f"/workspaces/{ws.id}/integrations/{{id}}",
                ws.id,
            )

        @rule(
            target=things,
            ws=workspaces,
            action=st.sampled_from(["put", "get", None]),
            values=VALUES,
            enforce=st.booleans(),
            default=st.booleans(),
        )
        def create_partial(
            self,
            ws: Thing,
            action: str | None,
            values: dict[str, Any],
            enforce: bool,
            default: bool,
        ) -> Thing | Any:
            body: dict[str, Any] = {
                "workspaceId": ws.id,
                "integrationName": "kv-store",
                "name": f"p{len(self.alive)}",
                "values": values,
                "enforcedKeys": sorted(values) if enforce else [],
                "isDefault": default,
            }
            if action is not None:
                body["actionName"] = action
            response = self.send("POST", "/partials", body)
            return self.created("partial", response, "partial", "/partials/{id}", ws.id)

        @rule(
            target=things,
            ws=st.none() | workspaces,
            kind=st.sampled_from(sorted(CONNECTION_CANARIES)),
        )
        def create_connection(self, ws: Thing | None, kind: str) -> Thing | Any:
            body: dict[str, Any] = {
                "integrationName": "http",
                "type": kind,
                "displayName": "machine",
                "externalId": f"c{len(self.alive)}",
                "values": CONNECTION_CANARIES[kind],
            }
            if ws is not None:
                body["workspaceId"] = ws.id
            response = self.send("POST", "/connections", body)
            return self.created(
                "connection", response, "connection", "/connections/{id}", ws.id if ws else None
            )

        @rule(target=things, ws=workspaces, external_id=st.sampled_from(["alice", "bob", "carol"]))
        def create_end_user(self, ws: Thing, external_id: str) -> Thing | Any:
            response = self.send(
                "POST", "/end-users", {"workspaceId": ws.id, "externalId": external_id}
            )
            return self.created("end_user", response, "endUser", "/end-users/{id}", ws.id)

        @rule(
            target=things,
            ws=st.none() | workspaces,
            decision=st.sampled_from(["require_approval", "notify_only", "block", "auto_approve"]),
        )
        def create_policy(self, ws: Thing | None, decision: str) -> Thing | Any:
            body: dict[str, Any] = {
                "name": "machine",
                "decision": decision,
                "actionNames": ["put"],
                "rules": {"conditions": [{"path": "key", "op": "equals", "value": "gated"}]},
            }
            if ws is not None:
                body["workspaceId"] = ws.id
            response = self.send("POST", "/approval-policies", body)
            return self.created(
                "policy", response, "policy", "/approval-policies/{id}", ws.id if ws else None
            )

        @rule(target=things, ws=workspaces)
        def create_server(self, ws: Thing) -> Thing | Any:
            response = self.send("POST", "/mcp/servers", {"workspaceId": ws.id, "name": "machine"})
            return self.created("server", response, "server", "/mcp/servers/{id}", ws.id)

        @rule(
            ws=workspaces,
            alias=st.none() | ALIASES,
            action=st.sampled_from(["put", "get", "list_keys", "delete", "send_request"]),
            key=st.sampled_from(["k", "gated", ""]),
            idempotency=st.none() | st.sampled_from(["idem-1", "idem-2"]),
        )
        def execute(
            self, ws: Thing, alias: str | None, action: str, key: str, idempotency: str | None
        ) -> None:
            body: dict[str, Any] = {
                "workspaceId": ws.id,
                "integrationName": "http" if action == "send_request" else "kv-store",
                "actionName": action,
                "input": {"url": "http://upstream.test/"}
                if action == "send_request"
                else {"key": key, "value": 1},
            }
            if alias is not None:
                body["integrationAlias"] = alias
            if idempotency is not None:
                body["idempotencyKey"] = idempotency
            response = self.send("POST", "/actions/execute", body)
            assert response.status_code in (200, 202, 400, 403, 404, 409, 422), response.text

        @rule(ws=workspaces, name=NAMES)
        def rename_workspace(self, ws: Thing, name: str) -> None:
            response = self.send("PATCH", ws.path, {"name": name})
            expected = (200, 409) if self.live_workspace(ws) else (404,)
            assert response.status_code in expected, response.text

        @rule(thing=things, name=NAMES)
        def patch(self, thing: Thing, name: str) -> None:
            response = self.send("PATCH", thing.path, {"name": name})
            if thing.path not in self.alive:
                assert response.status_code in (404, 405), response.text

        @rule(thing=st.one_of(things, workspaces))
        def foreign_org_sees_nothing(self, thing: Thing) -> None:
            for method in ("GET", "DELETE"):
                response = self.send(method, thing.path, token=world.b.api_key)
                assert response.status_code == 404, response.text
                assert response.json()["error"] == "NOT_FOUND"

        @rule(thing=consumes(things))
        def delete(self, thing: Thing) -> None:
            response = self.send("DELETE", thing.path)
            expected = 200 if thing.path in self.alive else 404
            assert response.status_code == expected, (thing, response.text)
            self.alive.pop(thing.path, None)

        @rule(ws=consumes(workspaces))
        def delete_workspace(self, ws: Thing) -> None:
            response = self.send("DELETE", ws.path)
            expected = 200 if ws.path in self.alive else 404
            assert response.status_code == expected, (ws, response.text)
            # Everything inside goes with it; org-wide things stay.
            for path, thing in list(self.alive.items()):
                if thing.workspace_id == ws.id:
                    del self.alive[path]

        @invariant()
        def what_was_made_is_there_and_what_was_deleted_is_gone(self) -> None:
            for thing in self.alive.values():
                if thing.kind not in LISTS:  # the lists below vouch for the others
                    response = self.send("GET", thing.path)
                    assert response.status_code == 200, (thing, response.text)
            for kind, (path, key) in LISTS.items():
                response = self.send("GET", path)
                listed = {item["id"] for item in response.json()[key]}
                expected = {t.id for t in self.alive.values() if t.kind == kind}
                assert listed == expected, (kind, listed, expected)

    return ApiMachine


def test_generated_sequences_keep_the_api_consistent(live: Live) -> None:
    machine = machine_for(live)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("TREADLE_PROBE_SEQUENCES", "10")),
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
