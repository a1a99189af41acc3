"""Identifiers and bearer tokens. Tokens are shown once and stored hashed."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_uuid() -> str:
    return str(uuid.uuid4())


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
