"""Two orgs, each holding one of every resource, for the probes to aim at.

The second org comes from `create_org`, what `treadle org create` runs. Every secret the world
stores is a distinctive canary (`CANARIES`), so a probe can scan anything the gateway says for
all of them at once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from treadle.app import Gateway
from treadle.auth.server.authority import Authority
from treadle.bootstrap import create_org, initialise
from treadle.errors import ErrorCode

from conftest import client_for

KNOWN_CODES = frozenset(code.value for code in ErrorCode)


def canary(kind: str) -> str:
    """A secret nobody would type by accident, long enough to be redacted as one."""
    return f"cnry-{kind}-7Hq2Xw9Lm4Zp8Rt3"


CONNECTION_CANARIES = {
    "bearer": {"token": canary("bearer")},
    "api_key": {"apiKey": canary("apikey")},
    "basic": {"username": "probe-user", "password": canary("basic")},
    "oauth2": {
        "accessToken": canary("access"),
        "refreshToken": canary("refresh"),
        "clientSecret": canary("o2client"),
    },
    "custom": {"sessionCookie": canary("custom")},
}
OAUTH_APP_SECRET = canary("oauthapp")
CANARIES: tuple[str, ...] = (
    *(value for values in CONNECTION_CANARIES.values() for value in values.values()),
    OAUTH_APP_SECRET,
)
CANARIES = tuple(value for value in CANARIES if value.startswith("cnry-"))


@dataclass
class Tenant:
    """One org's principals and the ids of what it holds."""

    org_id: str
    api_key: str
    workspace_id: str
    client: httpx2.AsyncClient
    restricted_key: str = ""
    server_token: str = ""  # the `mcp_…` token of its server `ids["server"]`
    second_workspace_id: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    # Every secret handed out once by the API: MCP tokens, webhook secrets, API keys.
    issued_secrets: list[str] = field(default_factory=list)

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        return await self.client.request(method, f"/api/v1{path}", **kwargs)

    def on(self, gateway: Gateway) -> Tenant:
        """The same tenant, with a client of `gateway` (a copy of the data dir it lives in)."""
        return dataclasses.replace(self, client=client_for(gateway, self.api_key))

    async def create(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        response = await self.call("POST", path, json=body)
        assert response.status_code in (200, 201), (path, response.text)
        created: dict[str, Any] = response.json()[key]
        return created


@dataclass
class World:
    gateway: Gateway
    a: Tenant
    b: Tenant

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret either org holds: none may ever appear in anything the gateway says."""
        return (*CANARIES, *self.a.issued_secrets, *self.b.issued_secrets)

    def all_ids(self) -> list[str]:
        return sorted({*self.a.ids.values(), *self.b.ids.values()})

    def pools(self, kinds: Iterable[str]) -> dict[str, list[str]]:
        """Ids of both orgs by kind (`connection` gathers `connection_bearer`, ...)."""
        return {
            kind: sorted(
                value
                for tenant in (self.a, self.b)
                for key, value in tenant.ids.items()
                if key.startswith(kind)
            )
            for kind in kinds
        }

    def on(self, gateway: Gateway) -> World:
        return World(gateway, self.a.on(gateway), self.b.on(gateway))


async def populate(gateway: Gateway, tenant: Tenant) -> None:
    """One of each resource in the tenant's default workspace (and org-wide where they exist)."""
    ws = tenant.workspace_id
    ids = tenant.ids
    ids["workspace"] = ws
    second = await tenant.create("/workspaces", {"name": "second"}, "workspace")
    tenant.second_workspace_id = ids["workspace2"] = second["id"]
    notes = await tenant.create(
        f"/workspaces/{ws}/integrations",
        {
            "integrationName": "kv-store",
            "integrationAlias": "notes",
            "connectionStrategy": "fixed",
            "settings": {"persistence": {"scope": "workspace"}},
        },
        "integration",
    )
    ids["integration"] = notes["id"]
    mine = await tenant.create(
        f"/workspaces/{ws}/integrations",
        {"integrationName": "kv-store", "integrationAlias": "mine", "connectionStrategy": "fixed"},
        "integration",
    )
    ids["integration_per_user"] = mine["id"]
    end_user = await tenant.create(
        "/end-users", {"workspaceId": ws, "externalId": "alice"}, "endUser"
    )
    ids["end_user"] = end_user["id"]
    for kind, values in CONNECTION_CANARIES.items():
        connection = await tenant.create(
            "/connections",
            {
                "integrationName": "http",
                "type": kind,
                "displayName": f"probe {kind}",
                "externalId": f"conn-{kind}",
                "values": values,
                "workspaceId": ws,
            },
            "connection",
        )
        ids[f"connection_{kind}"] = connection["id"]
    org_wide = await tenant.create(
        "/connections",
        {
            "integrationName": "http",
            "type": "bearer",
            "displayName": "org wide",
            "externalId": "conn-org",
            "values": CONNECTION_CANARIES["bearer"],
        },
        "connection",
    )
    ids["connection_org"] = org_wide["id"]
    partial = await tenant.create(
        "/partials",
        {
            "workspaceId": ws,
            "integrationName": "kv-store",
            "actionName": "put",
            "name": "preset",
            "values": {"key": "preset"},
        },
        "partial",
    )
    ids["partial"] = partial["id"]
    response = await tenant.call(
        "POST",
        "/approval-policies",
        json={
            "name": "gate",
            "decision": "require_approval",
            "workspaceId": ws,
            "actionNames": ["put"],
            "rules": {"conditions": [{"path": "key", "op": "equals", "value": "gated"}]},
            "notifyWebhookUrl": "http://127.0.0.1:9/hook",
        },
    )
    assert response.status_code == 201, response.text
    ids["policy"] = response.json()["policy"]["id"]
    tenant.issued_secrets.append(response.json()["webhookSecret"])
    org_policy = await tenant.create(
        "/approval-policies", {"name": "org gate", "decision": "notify_only"}, "policy"
    )
    ids["policy_org"] = org_policy["id"]
    response = await tenant.call(
        "POST", "/mcp/servers", json={"workspaceId": ws, "name": "probe server"}
    )
    assert response.status_code == 201, response.text
    ids["server"] = response.json()["server"]["id"]
    tenant.server_token = response.json()["token"]
    tenant.issued_secrets.append(tenant.server_token)
    response = await tenant.call(
        "PUT",
        "/oauth-apps/github",
        json={"clientId": "probe-client", "clientSecret": OAUTH_APP_SECRET},
    )
    assert response.status_code in (200, 201), response.text
    ids["oauth_app"] = "github"
    response = await tenant.call("POST", "/api-keys", json={"name": "probe key"})
    assert response.status_code == 201, response.text
    ids["api_key"] = response.json()["apiKey"]["id"]
    tenant.issued_secrets.append(response.json()["token"])
    idp = await tenant.create(
        "/identity-providers",
        {
            "name": "probe idp",
            "kind": "oidc",
            "issuer": "https://idp.example.com",
            "clientId": "probe-idp-client",
            "clientSecret": OAUTH_APP_SECRET,
        },
        "identityProvider",
    )
    ids["identity_provider"] = idp["id"]
    # Nothing listens on port 1: the record exists, its health says it cannot connect.
    upstream = await tenant.create(
        "/upstreams",
        {
            "name": f"probe-upstream-{tenant.org_id[-6:].lower()}",
            "transport": {"type": "streamable_http", "url": "http://127.0.0.1:1/mcp"},
            "allowPrivateNetwork": True,
        },
        "upstream",
    )
    ids["upstream"] = upstream["id"]
    # A client registered by DCR and a grant it got by a person's consent, made by the
    # authorization server's own code (the sign-in flow has tests of its own).
    authority = Authority(gateway)
    client = await authority.registrations.register(
        {"redirect_uris": ["http://127.0.0.1:9/callback"], "client_name": "probe client"}
    )
    grant, _code = await authority.grants.create(
        org_id=tenant.org_id,
        workspace_id=ws,
        server_id=ids["server"],
        client_id=client["client_id"],
        client_name="probe client",
        client_kind="registered",
        end_user_id=None,
        signed_in_as=f"api_key:{tenant.org_id}",
        scopes=["mcp"],
        resource=f"http://127.0.0.1:8400/mcp/{ids['server']}",
        redirect_uri="http://127.0.0.1:9/callback",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    )
    ids["oauth_client"] = client["client_id"]
    ids["oauth_grant"] = grant.id
    put = {
        "workspaceId": ws,
        "integrationName": "kv-store",
        "actionName": "put",
        "integrationAlias": "notes",
    }
    done = await tenant.call(
        "POST", "/actions/execute", json={**put, "input": {"key": "k1", "value": 1}}
    )
    assert done.status_code == 200, done.text
    paused = await tenant.call(
        "POST", "/actions/execute", json={**put, "input": {"key": "gated", "value": 2}}
    )
    assert paused.status_code == 202, paused.text
    ids["approval"] = paused.json()["approval"]["id"]
    async with gateway.store.db.write("probe") as txn:
        _key, restricted = await gateway.store.api_keys.create(
            txn, tenant.org_id, name="restricted", workspace_id=ws
        )
    tenant.restricted_key = restricted
    tenant.issued_secrets += [tenant.api_key, restricted]


async def build_world(gateway: Gateway) -> World:
    first = await initialise(gateway.store, gateway.settings.data_dir)
    second = await create_org(gateway.store, "probe org b")
    tenants = []
    for result in (first, second):
        assert result.api_key is not None
        tenant = Tenant(
            result.org_id, result.api_key, result.workspace_id, client_for(gateway, result.api_key)
        )
        await populate(gateway, tenant)
        tenants.append(tenant)
    return World(gateway, tenants[0], tenants[1])


async def close_world(world: World) -> None:
    await world.a.client.aclose()
    await world.b.client.aclose()


# Server-side text no answer may carry: a traceback, or a path of this machine.
_LEAKS = re.compile(r"Traceback \(most recent call last\)|File \"/|site-packages|\.py\", line \d")


def leaks(text: str, data_dir: Path) -> list[str]:
    """What in `text` a caller must never see: tracebacks, server paths."""
    found = [match.group() for match in _LEAKS.finditer(text)]
    found += [path for path in (str(data_dir), str(Path(__file__).parents[2])) if path in text]
    return found
