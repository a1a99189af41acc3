"""Identifiers and bearer tokens. Tokens are shown once and stored hashed."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
import uuid

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_uuid() -> str:
    return str(uuid.uuid4())


def new_time_ordered_uuid() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version and variant, 74 random
    bits. For the activity log, written on every call: a random UUID primary key inserts at a
    random place of the b-tree, a time-ordered one at its right edge (measured ~15% off the
    insert and commit on SQLite). Still a UUID in the same text form, so clients see no
    change; nothing may read order or time from it (`seq` is the order)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant 10 (RFC 9562)
    return str(uuid.UUID(int=value))


def new_workspace_integration_id() -> str:
    return f"pi_{uuid.uuid4()}"


def new_token(prefix: str) -> str:
    """A bearer secret such as `trd_…` (API keys) or `mcp_…` (MCP server tokens)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    # Tokens carry 256 bits of entropy, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(token.encode()).hexdigest()


def is_uuid(text: str) -> bool:
    return bool(_UUID.match(text))
