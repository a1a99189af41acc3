"""A minimal JSON-RPC-over-streamable-HTTP client on raw httpx2, for the load loops.

Used where the SDK `Client` itself would dominate what is measured (call loops at concurrency
32, thousands of idle sessions and listen streams). It sends exactly what the SDK client sends
(headers and `_meta` copied from the SDK 2.3 wire format) and parses the JSON or the single SSE
event of the answer; it does no validation of results.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx2

HANDSHAKE_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
ERAS = ("legacy", MODERN_VERSION)
_ACCEPT = "application/json, text/event-stream"
_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class RpcError(Exception):
    pass


def _parse(response: httpx2.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RpcError(f"HTTP {response.status_code}: {response.text[:300]}")
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        message: dict[str, Any] = json.loads(response.content)
    else:
        data = [
            line[5:].strip()
            for line in response.text.splitlines()
            if line.startswith("data:") and line[5:].strip()
        ]
        if not data:
            raise RpcError("empty SSE answer")
        message = json.loads(data[-1])
    if "error" in message:
        raise RpcError(json.dumps(message["error"])[:300])
    result: dict[str, Any] = message["result"]
    return result


class RawSession:
    """One MCP client connection: a handshake-era session, or stateless 2026-07-28 requests."""

    def __init__(self, http: httpx2.AsyncClient, url: str, era: str, token: str | None = None):
        self.http = http
        self.url = url
        self.era = era
        self.session_id: str | None = None
        self._ids = itertools.count(1)
        self._headers = {"accept": _ACCEPT, "content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"

    def headers(self, method: str, name: str | None = None) -> dict[str, str]:
        headers = dict(self._headers)
        if self.era == MODERN_VERSION:
            headers["mcp-protocol-version"] = MODERN_VERSION
            headers["mcp-method"] = method
            if name is not None:
                headers["mcp-name"] = name
        elif self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
            headers["mcp-protocol-version"] = HANDSHAKE_VERSION
        return headers

    def body(self, method: str, params: dict[str, Any] | None) -> bytes:
        params = dict(params or {})
        if self.era == MODERN_VERSION:
            params["_meta"] = _META
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params:
            message["params"] = params
        return json.dumps(message, separators=(",", ":")).encode()

    async def open(self) -> RawSession:
        if self.era != MODERN_VERSION:
            params = {
                "protocolVersion": HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0.1.0"},
            }
            response = await self.http.post(
                self.url,
                content=self.body("initialize", params),
                headers=self.headers("initialize"),
            )
            _parse(response)
            self.session_id = response.headers["mcp-session-id"]
            note = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
            done = await self.http.post(self.url, content=note, headers=self.headers("x"))
            if done.status_code != 202:
                raise RpcError(f"initialized: HTTP {done.status_code}")
        return self

    async def request(
        self, method: str, params: dict[str, Any] | None = None, name: str | None = None
    ) -> tuple[dict[str, Any], int]:
        """The result and the size of the HTTP body that carried it."""
        response = await self.http.post(
            self.url, content=self.body(method, params), headers=self.headers(method, name)
        )
        return _parse(response), len(response.content)

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result, _size = await self.request(
            "tools/call", {"name": name, "arguments": arguments}, name=name
        )
        return result

    async def list_page(self, cursor: str | None) -> tuple[dict[str, Any], int]:
        return await self.request("tools/list", {"cursor": cursor} if cursor else None)

    async def close(self) -> None:
        if self.session_id is not None:
            await self.http.delete(self.url, headers=self.headers("x"))
            self.session_id = None
