"""What an upstream record may name, and how its MCP client transport is opened.

Streamable HTTP: any http(s) URL, reached through the outbound guard (`treadle.net.guard`)
so a loopback or private address is refused at the address actually connected to, unless the
record sets `allowPrivateNetwork`. Stdio runs a program on the gateway's machine, so an API
caller may only pick one of the command lines the operator allowed in the server's own
configuration: `TREADLE_UPSTREAM_STDIO_ALLOW` names a JSON file (or holds the JSON itself)
listing them, `[{"command": "npx", "args": ["-y", "..."], "env": {...}}, ...]`. A record's
`command` and `args` must equal one entry exactly; the entry's `env` is the operator's.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.client.stdio import StdioServerParameters

from treadle.errors import ValidationFailed
from treadle.net import build_http_client
from treadle.net.guard import is_public_address

log = logging.getLogger(__name__)

STDIO_ALLOW_ENV = "TREADLE_UPSTREAM_STDIO_ALLOW"


@dataclass(frozen=True, slots=True)
class StdioCommand:
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def stdio_allow_list(environ: dict[str, str] | None = None) -> tuple[StdioCommand, ...]:
    """The operator's allowed stdio command lines (none when unset or unreadable)."""
    raw = (environ if environ is not None else os.environ).get(STDIO_ALLOW_ENV, "").strip()
    if not raw:
        return ()
    try:
        text = raw if raw.startswith("[") else Path(raw).read_text(encoding="utf-8")
        entries = json.loads(text)
        return tuple(
            StdioCommand(
                command=str(entry["command"]),
                args=tuple(str(arg) for arg in entry.get("args", ())),
                env=tuple(sorted((str(k), str(v)) for k, v in (entry.get("env") or {}).items())),
            )
            for entry in entries
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.error(
            "%s is not a readable JSON list of command lines; no stdio upstreams", STDIO_ALLOW_ENV
        )
        return ()


def allowed_stdio(command: str, args: list[str]) -> StdioCommand:
    for entry in stdio_allow_list():
        if entry.command == command and entry.args == tuple(args):
            return entry
    raise ValidationFailed(
        "This stdio command line is not in the server's allow-list "
        f"({STDIO_ALLOW_ENV}); the operator has to allow it there",
        field="transport.command",
        reason="stdio_not_allowed",
    )


async def check_url(url: str, allow_private_network: bool) -> None:
    """Refuse at registration what the guard would refuse at every connect (the guard still
    checks then: a name may resolve elsewhere later)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("transport.url must be an http(s) URL", field="transport.url")
    if parts.username or parts.password:
        raise ValidationFailed(
            "transport.url must not carry credentials; use a connection", field="transport.url"
        )
    if allow_private_network:
        return
    try:
        addresses = [ipaddress.ip_address(parts.hostname)]
    except ValueError:
        try:
            found = await anyio.getaddrinfo(
                parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            return  # unknown now; the guard decides at connect time
        addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    if not all(is_public_address(ip) for ip in addresses):
        raise ValidationFailed(
            "transport.url resolves to a loopback or private address; set "
            "allowPrivateNetwork: true to allow it",
            field="transport.url",
            reason="destination_not_allowed",
        )


def _any_address(_ip: Any) -> bool:
    return True


def http_client(
    allow_private_network: bool,
    headers: dict[str, str],
    on_status: Callable[[int], None] | None = None,
) -> httpx2.AsyncClient:
    """An outbound client for one session: the guard's own, with the session's auth header.
    Timeouts: a long read, since an upstream may stream a slow tool's progress. `on_status`
    sees every response's status: the SDK reports a 401 only as a generic error."""
    client = build_http_client(
        is_allowed_address=_any_address if allow_private_network else is_public_address,
        timeout=300.0,
    )
    client.headers.update(headers)
    if on_status is not None:
        report = on_status

        async def hook(response: httpx2.Response) -> None:
            report(response.status_code)

        client.event_hooks["response"] = [hook]
    return client


def stdio_parameters(transport: dict[str, Any]) -> StdioServerParameters:
    """Re-checked at every start: an entry the operator removed no longer runs."""
    entry = allowed_stdio(str(transport.get("command")), list(transport.get("args") or ()))
    return StdioServerParameters(
        command=entry.command, args=list(entry.args), env=dict(entry.env) or None
    )
