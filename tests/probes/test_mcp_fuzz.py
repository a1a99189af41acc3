"""MCP fuzz: generated JSON-RPC over streamable HTTP, both protocol eras, on a real server.

Envelopes (valid, broken, batched, not JSON at all), methods, params, session ids, protocol
versions, tokens and headers are drawn by Hypothesis and sent over real HTTP to the gateway
served on a loopback port. Properties: no 5xx, no traceback or server path in any answer, and
no hang: every request's answer starts within a deadline, and every answer that is not a
long-lived stream ends within it. After the fuzz the server still answers a plain request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.conftest import Served
from probes.generators import json_values, odd_text, weighted
from probes.world import World, leaks

HANDSHAKE = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
MODERN = "2026-07-28"
VERSIONS = [*HANDSHAKE, MODERN]
DEADLINE = 10.0  # seconds for an answer to start, and for a finite one to end
METHODS = [
    "initialize",
    "notifications/initialized",
    "ping",
    "tools/list",
    "tools/call",
    "server/discover",
    "subscriptions/listen",
    "resources/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/cancelled",
    "notifications/progress",
    "elicitation/create",
    "sampling/createMessage",
    "rpc.discover",
    "",
]
TOOLS = ["notes__put", "notes__get", "notes__list_keys", "mine__get", "mine__put", "nope__x"]
META = "io.modelcontextprotocol/"
FUZZ = settings(
    max_examples=int(os.environ.get("TREADLE_PROBE_EXAMPLES_MCP", "250")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def modern_meta(version: str) -> dict[str, Any]:
    return {
        f"{META}protocolVersion": version,
        f"{META}clientInfo": {"name": "probe", "version": "1"},
        f"{META}clientCapabilities": {},
    }


@st.composite
def params(draw: st.DrawFn, method: str, version: str | None) -> Any:
    shape = draw(st.sampled_from(["plausible"] * 4 + ["json", "missing"]))
    if shape == "missing":
        return None
    if shape == "json":
        return draw(json_values(TOOLS))
    found: dict[str, Any] = {}
    if method == "initialize":
        found = {
            "protocolVersion": draw(st.sampled_from(VERSIONS) | odd_text()),
            "capabilities": draw(st.sampled_from([{}, {"elicitation": {}}, {"roots": None}])),
            "clientInfo": {"name": "probe", "version": "1"},
        }
    elif method == "tools/call":
        found = {
            "name": draw(st.sampled_from(TOOLS) | odd_text()),
            "arguments": draw(
                st.fixed_dictionaries({}, optional={"key": odd_text(), "value": json_values([])})
                | json_values([])
            ),
        }
    elif method in ("resources/read", "prompts/get"):
        found = {"uri": draw(odd_text()), "name": draw(odd_text())}
    elif method == "tools/list":
        found = draw(st.fixed_dictionaries({}, optional={"cursor": odd_text()}))
    if draw(st.booleans()) and (version == MODERN or draw(st.booleans())):
        found["_meta"] = modern_meta(draw(st.sampled_from(VERSIONS) | odd_text()))
    return found


@st.composite
def envelope(draw: st.DrawFn, version: str | None) -> Any:
    method = draw(weighted((6, st.sampled_from(METHODS)), (1, odd_text())))
    message: dict[str, Any] = {}
    jsonrpc = draw(weighted((8, st.just("2.0")), (1, st.sampled_from(["1.0", 2, None, ""]))))
    if jsonrpc is not None:
        message["jsonrpc"] = jsonrpc
    if not method.startswith("notifications/") or draw(st.integers(0, 4)) == 0:
        message["id"] = draw(
            weighted(
                (6, st.integers(0, 2**31)),
                (2, st.text(max_size=12)),
                (1, st.sampled_from([None, 1.5, [], {}, True, 2**80])),
            )
        )
    if draw(st.integers(0, 19)):
        message["method"] = method
    found = draw(params(method, version))
    if found is not None:
        message["params"] = found
    if draw(st.integers(0, 9)) == 0:
        message["result"] = draw(json_values([]))
    return message


@dataclass(frozen=True)
class McpRequest:
    method: str
    server: str
    headers: dict[str, str]
    content: bytes | None

    def describe(self) -> str:
        return f"{self.method} {self.server} {self.headers} {(self.content or b'')[:300]!r}"


def header_text(text: str) -> str:
    # What an HTTP client can send at all: visible ASCII, no whitespace at either end.
    return "".join(char for char in text if " " <= char <= "~").strip()


HANDSHAKE_METHODS = [
    "tools/list",
    "tools/call",
    "tools/call",
    "ping",
    "initialize",
    "resources/list",
    "prompts/list",
    "logging/setLevel",
    "completion/complete",
    "notifications/cancelled",
]
MODERN_METHODS = [
    "tools/list",
    "tools/call",
    "tools/call",
    "server/discover",
    "ping",
    "prompts/list",
]


@st.composite
def coherent_requests(
    draw: st.DrawFn, server: str, sessions: list[tuple[str, str]], tokens: list[str]
) -> McpRequest:
    """Requests a client of either era could send (then with a twist in their params): the
    ones that get past authentication and the transport into the handlers."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    params_of: Any
    if draw(st.booleans()):
        token, session = draw(st.sampled_from(sessions))
        method = draw(st.sampled_from(HANDSHAKE_METHODS))
        headers["MCP-Protocol-Version"] = HANDSHAKE[-1]
        if method != "initialize":
            headers["Mcp-Session-Id"] = session
        params_of = draw(params(method, HANDSHAKE[-1]))
    else:
        token = draw(st.sampled_from(tokens))
        method = draw(st.sampled_from(MODERN_METHODS))
        headers["MCP-Protocol-Version"] = MODERN
        headers["Mcp-Method"] = method
        found = draw(params(method, MODERN))
        params_of = {**(found if isinstance(found, dict) else {}), "_meta": modern_meta(MODERN)}
        if method == "tools/call" and isinstance(params_of.get("name"), str):
            headers["Mcp-Name"] = header_text(params_of["name"])
    headers["Authorization"] = f"Bearer {token}"
    if token.startswith("trd_") and draw(st.booleans()):
        headers["X-Treadle-End-User"] = draw(st.sampled_from(["alice", "bob", "u" * 255]))
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if not method.startswith("notifications/"):
        message["id"] = draw(st.integers(0, 2**31))
    if params_of is not None:
        message["params"] = params_of
    return McpRequest("POST", server, headers, json.dumps(message).encode())


@st.composite
def mcp_requests(
    draw: st.DrawFn, servers: list[str], tokens: list[str], sessions: list[str]
) -> McpRequest:
    """Anything at all a client could put on the wire."""
    http_method = draw(
        weighted(
            (10, st.just("POST")),
            (2, st.just("GET")),
            (1, st.just("DELETE")),
            (1, st.sampled_from(["PUT", "PATCH", "OPTIONS", "HEAD"])),
        )
    )
    server = draw(
        weighted(
            (6, st.sampled_from(servers[:1])),
            (2, st.sampled_from(servers)),
            (1, odd_text().map(header_text)),
        )
    )
    version = draw(weighted((4, st.sampled_from(VERSIONS)), (2, st.none()), (1, odd_text())))
    headers: dict[str, str] = {
        "Authorization": draw(
            weighted(
                (10, st.sampled_from(tokens).map(lambda token: f"Bearer {token}")),
                (1, st.sampled_from(["", "Bearer", "Bearer mcp_nope", "Basic eDp5"])),
            )
        ),
        "Accept": draw(
            weighted(
                (6, st.just("application/json, text/event-stream")),
                (1, st.sampled_from(["application/json", "text/event-stream", "*/*", ""])),
            )
        ),
        "Content-Type": draw(
            weighted((8, st.just("application/json")), (1, st.sampled_from(["text/plain", ""])))
        ),
    }
    if version is not None:
        headers["MCP-Protocol-Version"] = header_text(version)
    session = draw(
        weighted((3, st.none()), (3, st.sampled_from(sessions)), (1, odd_text().map(header_text)))
    )
    if session:
        headers["Mcp-Session-Id"] = session
    if draw(st.integers(0, 3)) == 0:
        headers["X-Treadle-End-User"] = header_text(draw(odd_text()))
    kind = draw(st.sampled_from(["one"] * 6 + ["batch", "json", "raw", "none"]))
    content: bytes | None
    if kind == "one":
        message = draw(envelope(version))
        content = json.dumps(message).encode()
        # The 2026-07-28 era repeats the method (and a tool's name) in headers.
        method = message.get("method")
        if isinstance(method, str) and draw(weighted((4, st.just(True)), (1, st.just(False)))):
            headers["Mcp-Method"] = header_text(method)
            name = (
                (message.get("params") or {}).get("name")
                if isinstance(message.get("params"), dict)
                else None
            )
            if isinstance(name, str):
                headers["Mcp-Name"] = header_text(name)
    elif kind == "batch":
        content = json.dumps(draw(st.lists(envelope(version), max_size=3))).encode()
    elif kind == "json":
        content = json.dumps(draw(json_values([]))).encode()
    elif kind == "raw":
        content = draw(
            st.sampled_from([b"", b"{", b"[", b"null", b"\xff\xfe", b"[" * 300 + b"]" * 300])
            | st.binary(max_size=40)
        )
    else:
        content = None
    return McpRequest(http_method, server, headers, content)


def answer_of(http: httpx2.Client, base_url: str, request: McpRequest) -> tuple[int, str]:
    """The status and the text of the answer; a stream is read up to its first event."""
    url = f"{base_url}/mcp/{quote(request.server, safe='') or '%20'}"
    with http.stream(request.method, url, headers=request.headers, content=request.content) as r:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            # A stream may stay open (listen, the GET stream): its first event, if the
            # answer is to a request, must come within the deadline; then it is closed.
            if request.method != "POST" or b"subscriptions/listen" in (request.content or b""):
                return r.status_code, ""
            text = ""
            for line in r.iter_lines():
                text += line + "\n"
                if line.startswith("data:"):
                    break
            return r.status_code, text
        return r.status_code, r.read().decode(errors="replace")


def open_session(http: httpx2.Client, base_url: str, server: str, token: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE[-1],
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"},
        },
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    opened = http.post(f"{base_url}/mcp/{server}", json=body, headers=headers)
    assert opened.status_code == 200, opened.text
    session: str = opened.headers["mcp-session-id"]
    ready = http.post(
        f"{base_url}/mcp/{server}",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": HANDSHAKE[-1]},
    )
    assert ready.status_code == 202, ready.text
    return session


def tools_listed(http: httpx2.Client, base_url: str, world: World) -> int:
    """A plain modern-era tools/list: the server still serves after the fuzz."""
    response = http.post(
        f"{base_url}/mcp/{world.a.ids['server']}",
        json={
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/list",
            "params": {"_meta": modern_meta(MODERN)},
        },
        headers={
            "Authorization": f"Bearer {world.a.server_token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/list",
        },
    )
    assert response.status_code == 200, response.text
    return response.text.count('"name"')


def test_generated_json_rpc_never_crashes_leaks_or_hangs_in_either_era(served: Served) -> None:
    world = served.live.world
    a, b = world.a, world.b
    servers = [a.ids["server"], b.ids["server"]]
    tokens = [a.server_token, a.server_token, a.api_key, a.restricted_key, b.server_token]
    timeout = httpx2.Timeout(DEADLINE)
    with httpx2.Client(timeout=timeout) as http:
        pairs = [
            (token, open_session(http, served.base_url, a.ids["server"], token))
            for token in (a.server_token, a.api_key)
        ]
        sessions = [session for _, session in pairs]
        assert tools_listed(http, served.base_url, world) > 0
        requests = weighted(
            (2, coherent_requests(a.ids["server"], pairs, [a.server_token, a.api_key])),
            (1, mcp_requests(servers, tokens, sessions)),
        )

        @FUZZ
        @given(request=requests)
        def probe(request: McpRequest) -> None:
            sent = request.describe()
            try:
                status, text = answer_of(http, served.base_url, request)
            except httpx2.TimeoutException as hung:
                raise AssertionError(f"no answer within {DEADLINE}s: {sent}") from hung
            assert status < 500, (sent, status, text[:500])
            assert not leaks(text, world.gateway.settings.data_dir), (sent, text[:500])
            for secret in world.secrets:
                assert secret not in text, (sent, secret)

        probe()
        assert tools_listed(http, served.base_url, world) > 0
