"""What the cases share: the servers under test, their MCP server records, the run sizes."""

from __future__ import annotations

from dataclasses import dataclass

from bench.config import Sizes
from bench.procs import Bare, Treadle


@dataclass
class Env:
    sizes: Sizes
    treadle: Treadle
    bare_one: Bare  # baseline with the single static tool
    small_workspace: str  # bench-one as alias "bench": the tool bench__echo
    small_server: tuple[str, str]  # (server id, token)
    bare_big: Bare | None = None  # baseline with aliases x 25 static tools
    big_workspace: str = ""
    big_server: tuple[str, str] = ("", "")
