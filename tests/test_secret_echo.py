"""Secrets an upstream echoes back never leave treadle: not from a provider's token endpoint
into the log or a refusal, and not from an action's successful answer into REST, MCP or the
activity log."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest

from emulators.github import GitHubEmulator
from emulators.oauth import OAuthServer
from emulators.oauth_stage import CLIENT_ID, CLIENT_SECRET, authorize, local, put_app, start
from emulators.server import serve
from test_oauth_refresh import Connected, connected, list_repos
from treadle.engine.redaction import REDACTED
from treadle.oauth.client import GrantRefused, TokenClient
from treadle.settings import Settings

import mcp_harness
from conftest import Api, open_api
from mcp_harness import ERAS, McpEnv

pytestmark = pytest.mark.anyio

__all__ = ["connected"]  # the fixture, imported to be used here

ECHO = "invalid_grant {refresh_token} {client_secret}"


def assert_absent(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text


# -- the token endpoint -----------------------------------------------------------------------


async def test_a_refresh_token_echoed_in_the_providers_error_never_reaches_log_or_refusal(
    api: Api, connected: Connected, caplog: pytest.LogCaptureFixture
) -> None:
    connected.oauth.fail_refresh = ECHO

    with caplog.at_level(logging.DEBUG):
        refused = await list_repos(api, connected)
        again = await list_repos(api, connected)

    [sent] = connected.oauth.errors_sent
    secrets = sent.split()[1:]
    assert len(secrets) == 2  # the provider did echo both
    assert CLIENT_SECRET in secrets
    activity = await api.get("/activity", params={"limit": 200})
    connection = await api.get(f"/connections/{connected.connection_id}")
    assert_absent(secrets, caplog.text, refused.text, again.text, activity.text, connection.text)
    body = refused.json()
    assert refused.status_code == 400
    assert body["error"] == "CONNECTION_ERROR"
    assert body["providerError"] == "invalid_grant"
    assert again.json()["error"] == "CONNECTION_ERROR"
    assert "invalid_grant" in caplog.text  # the code is kept for the operator


async def test_an_unrecognised_provider_error_is_not_carried_at_all(
    api: Api, connected: Connected, caplog: pytest.LogCaptureFixture
) -> None:
    connected.oauth.fail_refresh = "{refresh_token} was not accepted"

    with caplog.at_level(logging.DEBUG):
        refused = await list_repos(api, connected)

    [sent] = connected.oauth.errors_sent
    leaked = sent.split()[0]
    assert_absent([leaked], caplog.text, refused.text)
    assert refused.json()["error"] == "CONNECTION_ERROR"
    assert refused.json()["providerError"] == "unrecognised_error"


async def test_a_verifier_and_client_secret_echoed_by_the_exchange_never_reach_log_or_page(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # (The code itself travels in the callback URL, which the test client logs.)
    github = GitHubEmulator("not-yet-issued")
    oauth = OAuthServer(CLIENT_ID, CLIENT_SECRET, api.gateway.oauth.flow.redirect_uri)
    oauth.fail_exchange = "invalid_grant {code_verifier} {client_secret}"
    async with serve(oauth.app) as url, serve(github.app) as github_url:
        assert (await put_app(api.client, "github", url, github_url)).status_code == 201
        location = await start(api.client, workspaceId=api.workspace_id, integrationName="github")
        with caplog.at_level(logging.DEBUG):
            finished = await api.client.get(local(await authorize(location)))

    assert finished.status_code == 400
    [sent] = oauth.errors_sent
    secrets = sent.split()[1:]
    assert len(secrets) == 2
    assert_absent(secrets, caplog.text, finished.text)
    assert (await api.get("/connections")).json()["connections"] == []


async def test_the_token_client_keeps_only_a_recognised_code(api: Api) -> None:
    oauth = OAuthServer(CLIENT_ID, CLIENT_SECRET, api.gateway.oauth.flow.redirect_uri)
    oauth.fail_exchange = "invalid_grant: {code} {code_verifier}"
    async with serve(oauth.app) as url:
        assert (await put_app(api.client, "github", url, url)).status_code == 201
        app = await api.gateway.oauth.apps.get(api.org_id, "github")
        assert app is not None
        client = TokenClient(api.gateway.http)
        with pytest.raises(GrantRefused) as refused:
            await client.exchange(
                app, CLIENT_SECRET, code="code-1234567", redirect_uri="x", verifier="v-7654321"
            )

    assert refused.value.error == "invalid_grant"
    assert "code-1234567" not in str(refused.value)
    assert "v-7654321" not in str(refused.value)
    assert json.dumps(oauth.errors_sent).count("code-1234567") == 1


# -- a successful answer ----------------------------------------------------------------------

KEY = "sk-echo-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.fixture
async def keyed_api(settings: Settings) -> AsyncIterator[Api]:
    """A gateway serving the test integrations, with `keyed` configured on a connection whose
    key is KEY."""
    async with open_api(settings, mcp_harness.test_catalog()) as opened:
        created = await opened.post(
            "/connections",
            {
                "integrationName": "keyed",
                "type": "api_key",
                "displayName": "Echoed",
                "externalId": "echoed",
                "values": {"apiKey": KEY},
                "workspaceId": opened.workspace_id,
            },
        )
        assert created.status_code == 201, created.text
        await opened.configure("keyed", integrationAlias="keys", connectionId="echoed")
        yield opened


async def test_a_key_echoed_in_a_successful_rest_answer_is_scrubbed(keyed_api: Api) -> None:
    ran = await keyed_api.execute(
        integrationName="keyed", actionName="echo_key", input={"note": f"mine is {KEY}"}
    )

    assert ran.status_code == 200, ran.text
    assert KEY not in ran.text
    body = ran.json()
    assert body["success"] is True
    output = body["output"]
    assert output["headers"] == {"Authorization": f"Bearer {REDACTED}"}
    assert output["seen"] == [{"token": REDACTED}, REDACTED]
    assert output[REDACTED] == "the key as a key"  # keys are scrubbed too
    activity = await keyed_api.get("/activity", params={"type": "action_execution"})
    [entry] = activity.json()["activity"]
    assert entry["status"] == "succeeded"
    assert KEY not in activity.text


async def test_basic_credentials_echoed_as_a_header_are_scrubbed_but_not_the_username(
    keyed_api: Api,
) -> None:
    created = await keyed_api.post(
        "/connections",
        {
            "integrationName": "keyed",
            "type": "basic",
            "displayName": "Basic",
            "externalId": "basic",
            "values": {"username": "octocat", "password": KEY},
            "workspaceId": keyed_api.workspace_id,
        },
    )
    assert created.status_code == 201, created.text
    await keyed_api.configure("keyed", integrationAlias="basic", connectionId="basic")

    ran = await keyed_api.execute(
        integrationName="keyed", integrationAlias="basic", actionName="echo_key"
    )

    assert ran.status_code == 200, ran.text
    output = ran.json()["output"]
    assert output["headers"] == {"Authorization": f"Basic {REDACTED}"}
    assert output["seen"] == [{"token": REDACTED}, REDACTED]
    assert output["login"] == "octocat"  # a name, not a secret: real data stays intact
    assert KEY not in ran.text


async def test_a_replayed_idempotent_answer_is_scrubbed_too(keyed_api: Api) -> None:
    first = await keyed_api.execute(
        integrationName="keyed", actionName="echo_key", idempotencyKey="echo-once"
    )
    replayed = await keyed_api.execute(
        integrationName="keyed", actionName="echo_key", idempotencyKey="echo-once"
    )

    assert first.status_code == replayed.status_code == 200, replayed.text
    assert replayed.json()["output"] == first.json()["output"]
    assert KEY not in first.text
    assert KEY not in replayed.text


@pytest.mark.parametrize("transport", ["memory", "http"])
@pytest.mark.parametrize("era", ERAS)
async def test_a_key_echoed_in_a_successful_mcp_answer_is_scrubbed(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    created = await mcp_env.rest.post(
        "/api/v1/connections",
        json={
            "integrationName": "keyed",
            "type": "api_key",
            "displayName": "Echoed",
            "externalId": "echoed",
            "values": {"apiKey": KEY},
            "workspaceId": mcp_env.workspace_id,
        },
    )
    assert created.status_code == 201, created.text
    await mcp_env.configure("keyed", integrationAlias="keys", connectionId="echoed")
    async with mcp_env.connect(transport, era) as client:
        result = await client.call_tool("keys__echo_key", {"note": f"mine is {KEY}"})

    assert not result.is_error, result
    assert result.structured_content is not None
    assert result.structured_content["seen"] == [{"token": REDACTED}, REDACTED]
    assert KEY not in result.model_dump_json()
    entries = await mcp_env.activity(source="mcp_tools")
    assert [e["status"] for e in entries] == ["succeeded"]
    assert KEY not in json.dumps(entries)
