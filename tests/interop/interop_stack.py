"""One real `treadle serve` for the interop tests (tests/conformance/live.py); import `gateway`.

The workspace has a `kv-store` alias `notes` with one shared key space, and one MCP server
record; clients reach it over loopback HTTP with the server's bearer token, or over stdio.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))

from live import Stack


@dataclass(frozen=True)
class Gateway:
    stack: Stack
    server_id: str
    token: str

    @property
    def url(self) -> str:
        return self.stack.mcp_url(self.server_id)

    @property
    def data_dir(self) -> Path:
        return self.stack.data_dir


@pytest.fixture(scope="session", name="gateway")
def gateway_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stack = Stack.start(tmp_path_factory.mktemp("interop") / "data")
    try:
        stack.configure("kv-store", "notes", settings={"persistence": {"scope": "workspace"}})
        server_id, token = stack.create_server("interop")
        yield Gateway(stack, server_id, token)
    finally:
        stack.stop()
