"""Secret canaries: distinctive secrets in every kind of credential, through every outcome.

Every connection type (bearer, API key, basic, OAuth2 access and refresh tokens), an OAuth
app's client secret, MCP server tokens, API keys and webhook signing secrets hold a canary
value. Calls then run through every path a secret could escape by: an upstream that answers
with the credentials it was sent (in a success, a 401, a 403, a 500, a page that is not JSON,
a transport error's text), a token endpoint that echoes the refresh token and client secret,
a refresh that issues new tokens, an approval-gated call (its page, its webhooks, its retry),
over REST and MCP in both eras. Every response body, the activity log, the approval page,
every webhook delivered and the whole server log are scanned: no canary anywhere.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest

from probes.conftest import Upstream, serving
from probes.world import CONNECTION_CANARIES, OAUTH_APP_SECRET, Tenant, World, canary
from test_mcp_http_access import ERAS, client_of

pytestmark = pytest.mark.anyio

NEW_ACCESS = canary("newaccess")
NEW_REFRESH = canary("newrefresh")
INPUT_SECRET = canary("input")
BASIC_PAIR = base64.b64encode(
    f"{CONNECTION_CANARIES['basic']['username']}:{CONNECTION_CANARIES['basic']['password']}".encode()
).decode()
HOOKS = "http://hooks.test/hook"
GITHUB_TYPES = ("bearer", "api_key", "oauth2", "basic", "custom")
# How the provider answers an API call; every answer quotes the credentials it was sent.
MODES = ("echo", "unauthorized", "forbidden", "server_error", "not_json", "unreachable")


@dataclass
class Provider:
    """A provider (GitHub's API and token endpoint) and a webhook receiver, all echoing."""

    mode: str = "echo"
    refuse_refresh: bool = False
    hooks: list[bytes] = field(default_factory=list)
    hook_arrived: anyio.Event = field(default_factory=anyio.Event)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        sent = request.headers.get("authorization", "")
        if request.url.host == "quiet.test":
            return httpx2.Response(200, json={"ok": True})
        if request.url.host == "hooks.test":
            self.hooks.append(request.content)
            self.hook_arrived.set()
            return httpx2.Response(200, json={})
        if request.url.path.endswith("/access_token"):
            return self._token(request, sent)
        echo = {"authorization": sent, "headers": dict(request.headers), "url": str(request.url)}
        if self.mode == "unreachable":
            raise httpx2.ConnectError(f"cannot reach upstream with {sent}")
        answers = {
            "echo": httpx2.Response(200, json=[{"id": 1, "full_name": sent, "echo": echo}]),
            "unauthorized": httpx2.Response(401, json={"message": f"Bad credentials {sent}"}),
            "forbidden": httpx2.Response(403, json={"message": f"no {sent}", "echo": echo}),
            "server_error": httpx2.Response(500, text=f"Traceback: boom with {sent}"),
            "not_json": httpx2.Response(200, text=f"<html>{sent}</html>"),
        }
        return answers[self.mode]

    def _token(self, request: httpx2.Request, sent: str) -> httpx2.Response:
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        quoted = f"{form.get('refresh_token')} {form.get('client_secret')} {sent}"
        if self.refuse_refresh:
            return httpx2.Response(
                400, json={"error": f"invalid_grant {quoted}", "error_description": quoted}
            )
        return httpx2.Response(
            200,
            json={
                "access_token": NEW_ACCESS,
                "refresh_token": NEW_REFRESH,
                "expires_in": 3600,
                "token_type": "bearer",
            },
        )


@pytest.fixture
def provider(upstream: Upstream) -> Provider:
    found = Provider()
    upstream.handler = found
    return found


@dataclass
class Scan:
    """Everything the gateway said, kept to be searched for every secret at the end."""

    texts: list[tuple[str, str, frozenset[str]]] = field(default_factory=list)

    def add(self, where: str, text: str, callers_own: frozenset[str] = frozenset()) -> None:
        """`callers_own`: secrets the caller itself sent in this request, which its own
        answer may carry back (the URL an http request went to, say)."""
        self.texts.append((where, text, callers_own))

    def hits(self, secrets: Iterator[str]) -> list[tuple[str, str]]:
        wanted = list(secrets)
        return [
            (where, secret)
            for where, text, own in self.texts
            for secret in wanted
            if secret in text and secret not in own
        ]


def every_secret(world: World) -> Iterator[str]:
    yield from world.secrets
    yield from (NEW_ACCESS, NEW_REFRESH, INPUT_SECRET, BASIC_PAIR)


async def connect(tenant: Tenant, integration: str, kind: str, alias: str) -> None:
    connection = await tenant.create(
        "/connections",
        {
            "integrationName": integration,
            "type": kind,
            "displayName": alias,
            "externalId": alias,
            "values": CONNECTION_CANARIES[kind],
            "workspaceId": tenant.workspace_id,
            "baseUrl": "http://api.github.test",
        },
        "connection",
    )
    await tenant.create(
        f"/workspaces/{tenant.workspace_id}/integrations",
        {
            "integrationName": integration,
            "integrationAlias": alias,
            "connectionStrategy": "fixed",
            "connectionId": connection["id"],
        },
        "integration",
    )


async def execute(
    tenant: Tenant, scan: Scan, integration: str, alias: str, action: str, **fields: Any
) -> httpx2.Response:
    body = {
        "workspaceId": tenant.workspace_id,
        "integrationName": integration,
        "integrationAlias": alias,
        "actionName": action,
        "input": {},
        **fields,
    }
    response = await tenant.call("POST", "/actions/execute", json=body)
    assert response.status_code < 500, response.text
    own = frozenset({INPUT_SECRET}) if response.status_code == 200 else frozenset()
    scan.add(f"REST {alias} {action}", response.text, own)
    return response


# What `treadle serve` leaves at WARNING (its CLI sets these): their DEBUG and INFO lines
# (a library's own request lines, SQL parameters) are not in the server's log.
LIBRARIES = ("httpx2", "httpcore2", "mcp", "sqlalchemy", "aiosqlite")


@pytest.fixture
def scan(caplog: pytest.LogCaptureFixture) -> Iterator[Scan]:
    """The log as `treadle serve -v` writes it: treadle's own loggers at DEBUG."""
    found = Scan()
    with caplog.at_level(logging.DEBUG):
        for name in LIBRARIES:
            caplog.set_level(logging.WARNING, logger=name)
        yield found


async def org_key(world: World) -> str:
    """Another org-wide key of the first org: approvals need a reviewer besides the caller."""
    store = world.gateway.store
    async with store.db.write("probe") as txn:
        _key, token = await store.api_keys.create(txn, world.a.org_id, name="reviewer")
    return token


async def finish(world: World, scan: Scan, caplog: pytest.LogCaptureFixture) -> None:
    for path in ("/activity?limit=200", "/connections", "/approvals", "/approval-policies"):
        response = await world.a.call("GET", path)
        scan.add(f"GET {path}", response.text)
    scan.add("server log", caplog.text)
    assert scan.hits(every_secret(world)) == []


async def test_no_credential_escapes_through_any_answer_of_a_provider(
    world: World,
    provider: Provider,
    upstream: Upstream,
    scan: Scan,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = world.a
    for kind in GITHUB_TYPES:
        await connect(a, "github", kind, f"gh-{kind.replace('_', '-')}")
    for kind in ("basic", "api_key"):
        await connect(a, "keyed", kind, f"keyed-{kind.replace('_', '-')}")
    for mode in MODES:
        provider.mode = mode
        for kind in GITHUB_TYPES:
            await execute(a, scan, "github", f"gh-{kind.replace('_', '-')}", "list_repos")
    for kind in ("basic", "api_key"):
        answered = await execute(a, scan, "keyed", f"keyed-{kind.replace('_', '-')}", "echo_key")
        assert answered.status_code == 200, answered.text
    # The secrets did reach the provider (so its echoes carried them back to the gateway).
    sent = " ".join(r.headers.get("authorization", "") for r in upstream.seen)
    for kind in ("bearer", "api_key", "oauth2"):
        assert next(iter(CONNECTION_CANARIES[kind].values())) in sent, kind
    await finish(world, scan, caplog)


async def test_a_token_endpoint_echoing_the_refresh_token_and_client_secret_leaks_nothing(
    world: World,
    provider: Provider,
    upstream: Upstream,
    scan: Scan,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = world.a
    await connect(a, "github", "oauth2", "gh-refused")
    provider.mode, provider.refuse_refresh = "unauthorized", True
    refused = await execute(a, scan, "github", "gh-refused", "list_repos")
    assert refused.json()["error"] == "CONNECTION_ERROR", refused.text
    again = await execute(a, scan, "github", "gh-refused", "list_repos")
    assert again.json()["error"] == "CONNECTION_ERROR", again.text
    # The provider did echo both secrets: the probe reached the token endpoint.
    assert OAUTH_APP_SECRET in str([r.content for r in upstream.seen])
    await finish(world, scan, caplog)


async def test_refreshed_tokens_are_as_secret_as_the_first_ones(
    world: World,
    provider: Provider,
    upstream: Upstream,
    scan: Scan,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = world.a
    await connect(a, "github", "oauth2", "gh-renewed")
    provider.mode = "unauthorized"
    await execute(a, scan, "github", "gh-renewed", "list_repos")  # 401, refresh, 401 again
    provider.mode = "echo"
    renewed = await execute(a, scan, "github", "gh-renewed", "list_repos")
    assert renewed.status_code == 200, renewed.text
    sent = [r.headers.get("authorization", "") for r in upstream.seen]
    assert f"Bearer {NEW_ACCESS}" in sent  # the refresh happened
    await finish(world, scan, caplog)


@pytest.mark.parametrize("era", ERAS)
async def test_no_credential_escapes_over_mcp(
    world: World, provider: Provider, scan: Scan, caplog: pytest.LogCaptureFixture, era: str
) -> None:
    a = world.a
    for kind in ("bearer", "oauth2", "basic"):
        await connect(a, "github", kind, f"gh-{kind}")
    await connect(a, "keyed", "basic", "keyed-basic")
    async with serving(world.gateway) as base:
        url = f"{base}/mcp/{a.ids['server']}"
        async with client_of(url, a.server_token, era) as client:
            for mode in MODES:
                provider.mode = mode
                for kind in ("bearer", "oauth2", "basic"):
                    result = await client.call_tool(f"gh_{kind}__list_repos", {})
                    scan.add(f"MCP {era} {mode} {kind}", result.model_dump_json())
            result = await client.call_tool("keyed_basic__echo_key", {})
            assert not result.is_error, result
            scan.add(f"MCP {era} echo_key", result.model_dump_json())
            listed = await client.list_tools()
            scan.add(f"MCP {era} tools/list", listed.model_dump_json())
    await finish(world, scan, caplog)


async def test_a_gated_call_leaks_nothing_through_its_page_webhooks_or_retry(
    world: World, provider: Provider, scan: Scan, caplog: pytest.LogCaptureFixture
) -> None:
    a = world.a
    await connect(a, "keyed", "basic", "keyed-gated")
    web = await a.create(
        f"/workspaces/{a.workspace_id}/integrations",
        {"integrationName": "http", "integrationAlias": "web", "connectionStrategy": "fixed"},
        "integration",
    )
    assert web["id"]
    policy = await a.call(
        "POST",
        "/approval-policies",
        json={
            "name": "gate everything",
            "decision": "require_approval",
            "workspaceId": a.workspace_id,
            "actionNames": ["echo_key", "send_request"],
            "priority": 1,
            "notifyWebhookUrl": HOOKS,
        },
    )
    assert policy.status_code == 201, policy.text
    webhook_secret = policy.json()["webhookSecret"]
    reviewer = await org_key(world)
    async with serving(world.gateway):
        calls = [
            ("keyed", "keyed-gated", "echo_key", {"note": "gated"}),
            (
                "http",
                "web",
                "send_request",
                {
                    "url": "http://quiet.test/",
                    "headers": {"Authorization": f"Bearer {INPUT_SECRET}"},
                    "query": {"access_token": INPUT_SECRET},
                },
            ),
        ]
        for integration, alias, action, given in calls:
            paused = await execute(a, scan, integration, alias, action, input=given)
            assert paused.status_code == 202, paused.text
            approval = paused.json()["approval"]
            link = urlsplit(approval["approvalUrl"])
            page = await a.client.get(f"{link.path}?{link.query}")
            assert page.status_code == 200, page.text
            scan.add(f"approval page {action}", page.text)
            decided = await a.call(
                "POST",
                f"/approvals/{approval['id']}/approve",
                json={"reason": "ok"},
                headers={"Authorization": f"Bearer {reviewer}"},
            )
            assert decided.status_code == 200, decided.text
            scan.add(f"decision {action}", decided.text)
            key = approval["retry"]["idempotencyKey"]
            done = await execute(
                a, scan, integration, alias, action, input=given, idempotencyKey=key
            )
            assert done.status_code == 200, done.text
        with anyio.fail_after(10):
            while len(provider.hooks) < 4:  # pending and approved, for each call
                await provider.hook_arrived.wait()
                provider.hook_arrived = anyio.Event()
    for body in provider.hooks:
        scan.add("webhook", body.decode())
        assert webhook_secret not in body.decode()
    await finish(world, scan, caplog)
