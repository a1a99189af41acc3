"""An MCP server pointed at the org's own authorization server, on a real `treadle serve`: its
metadata names that issuer, and the endpoint takes that server's JWTs (signed by a test key
served over JWKS on loopback), acting as the end user its claim names. Refusals keep their
status and code."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from jwks_server import AuthorizationServer, authorization_server
from mcp_harness import McpEnv, ServeProcess
from test_mcp_oauth import INITIALIZE, certificate, connect_keyed, oauth_serve

pytestmark = pytest.mark.anyio
__all__ = ["certificate", "oauth_serve"]  # fixtures shared with test_mcp_oauth.py

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
WHOAMI = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {
        "name": "keyed__whoami",
        "arguments": {},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "probe", "version": "1"},
        },
    },
}


@dataclass
class External:
    env: McpEnv
    server: AuthorizationServer
    base: str

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp/{self.env.server_id}"

    async def post(self, token: str, body: dict[str, Any] = INITIALIZE) -> httpx2.Response:
        headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
        if body is WHOAMI:
            headers["MCP-Protocol-Version"] = "2026-07-28"
            headers["Mcp-Method"] = "tools/call"
            headers["Mcp-Name"] = "keyed__whoami"
        async with httpx2.AsyncClient(timeout=30) as http:
            return await http.post(self.mcp_url, content=json.dumps(body), headers=headers)


@pytest.fixture
async def external(mcp_env: McpEnv, oauth_serve: ServeProcess) -> AsyncIterator[External]:
    await connect_keyed(mcp_env)
    await mcp_env.create_server()
    async with authorization_server() as server:
        made = await mcp_env.rest.post(
            "/api/v1/identity-providers",
            json={
                "name": f"corporate AS {uuid.uuid4().hex[:8]}",
                "kind": "external_as",
                "issuer": server.issuer,
                "allowPrivateNetwork": True,
                "mcpServerIds": [mcp_env.server_id],
            },
        )
        assert made.status_code == 201, made.text
        yield External(mcp_env, server, oauth_serve.base_url)


async def test_the_metadata_names_the_external_issuer(external: External) -> None:
    async with httpx2.AsyncClient() as http:
        found = await http.get(
            f"{external.base}/.well-known/oauth-protected-resource/mcp/{external.env.server_id}"
        )
    assert found.status_code == 200
    assert found.json()["authorization_servers"] == [external.server.issuer]
    assert found.json()["resource"] == external.mcp_url


async def test_its_jwt_acts_as_the_end_user_its_claim_names(external: External) -> None:
    token = external.server.token(aud=external.mcp_url, sub="bob")
    answered = await external.post(token, WHOAMI)
    assert answered.status_code == 200, answered.text
    result = answered.json()["result"]
    assert result["structuredContent"] == {"connection": "conn-bob", "endUser": "bob"}


@pytest.mark.parametrize(
    ("claims", "status", "code", "error"),
    [
        ({"aud": "https://elsewhere.example/mcp"}, 401, "UNAUTHORIZED", "invalid_token"),
        ({"lifetime": -60}, 401, "UNAUTHORIZED", "invalid_token"),
        ({"scope": "email"}, 403, "SCOPE_DENIED", "insufficient_scope"),
    ],
)
async def test_its_refusals_keep_their_status_and_code(
    external: External, claims: dict[str, Any], status: int, code: str, error: str
) -> None:
    fields: dict[str, Any] = {"aud": external.mcp_url, **claims}
    refused = await external.post(external.server.token(**fields))
    assert refused.status_code == status
    assert refused.json()["error"] == code
    challenge = refused.headers["www-authenticate"]
    assert f'error="{error}"' in challenge
    assert 'scope="mcp"' in challenge
