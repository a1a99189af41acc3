"""A handshake-era session's state, sealed into its own `Mcp-Session-Id`.

What a replica needs to continue a session it did not open travels with every request: the
MCP server, the principal and end user that opened it, the negotiated protocol version and
what the client declared at `initialize` (capabilities, name and version). It is compressed and
sealed with AES-256-GCM under a key derived from the gateway's secret key, so every replica
sharing that secret opens it and nobody else can read, forge or alter one: a session ID that
does not open is answered as an unknown session (404). Nothing is stored to open a session;
whether it has ended is the database's (`treadle.mcp.session_marks`).

Rotating the secret key therefore ends every open session (their IDs no longer open); clients
answer the 404 by initializing again, as the protocol asks them to.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mcp.types import ClientCapabilities, Implementation, InitializeRequestParams
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError

from treadle.mcp.binding import Binding

KEY_PURPOSE = "treadle mcp sessions"
# The version of the sealed layout; a new layout takes a new prefix, so old IDs fail cleanly.
PREFIX = "ts1."
_AAD = b"treadle mcp session v1"
_NONCE_BYTES = 12
# Header lines stay well inside what proxies accept (nginx: 8 KB per header line by default).
MAX_SESSION_ID_CHARS = 4096
# What is kept of the client's `clientInfo`: enough to say who it is, each cut to a length
# that keeps the ID well inside MAX_SESSION_ID_CHARS.
_CLIENT_INFO_FIELDS = ("name", "version", "title")
_CLIENT_INFO_CHARS = 200


@dataclass(frozen=True, slots=True)
class SessionState:
    """Everything a replica needs to serve a session it did not open."""

    key: str  # random, unique per session: names it in the database
    server_id: str  # the binding's cache key: the MCP server's ID over HTTP
    principal: str  # the binding's actor: `mcp_server:…` or `api_key:…`
    end_user_id: str | None
    protocol_version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]

    def belongs_to(self, binding: Binding) -> bool:
        """Whether these credentials are the ones that opened the session."""
        return (
            self.server_id == binding.cache_key
            and self.principal == binding.actor
            and self.end_user_id == binding.end_user_id
        )

    def client_params(self) -> InitializeRequestParams:
        """The `initialize` params as the session's first replica accepted them."""
        return InitializeRequestParams(
            protocol_version=self.protocol_version,
            capabilities=ClientCapabilities.model_validate(self.capabilities),
            client_info=Implementation.model_validate(self.client_info),
        )

    def _packed(self) -> dict[str, Any]:
        return {
            "k": self.key,
            "s": self.server_id,
            "p": self.principal,
            "u": self.end_user_id,
            "v": self.protocol_version,
            "c": self.capabilities,
            "i": self.client_info,
        }


def opening_state(binding: Binding, body: bytes) -> SessionState:
    """The state of a session about to be opened by this request body.

    The negotiated version is the SDK's rule (the client's if it is one we speak, else our
    latest). A body that is not a well-formed `initialize` opens no session (the SDK refuses
    it), so what is sealed for it is never used: it falls back to empty declarations."""
    params = _initialize_params(body)
    requested = params.get("protocolVersion")
    version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    capabilities = params.get("capabilities")
    info = params.get("clientInfo")
    try:
        ClientCapabilities.model_validate(capabilities)
        Implementation.model_validate(info)
    except ValidationError:
        capabilities, info = {}, {"name": "unknown", "version": "0"}
    assert isinstance(capabilities, dict)
    assert isinstance(info, dict)
    return SessionState(
        key=os.urandom(16).hex(),
        server_id=binding.cache_key,
        principal=binding.actor,
        end_user_id=binding.end_user_id,
        protocol_version=str(version),
        capabilities=capabilities,
        client_info={
            name: str(info[name])[:_CLIENT_INFO_CHARS]
            for name in _CLIENT_INFO_FIELDS
            if isinstance(info.get(name), str)
        },
    )


def _initialize_params(body: bytes) -> Mapping[str, Any]:
    try:
        message = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return {}
    params = message.get("params")
    return params if isinstance(params, dict) else {}


class SessionSeal:
    """Seals and opens session states with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        self._cipher = AESGCM(key)

    def seal(self, state: SessionState) -> str:
        sealed = self._seal(state._packed())
        if len(sealed) > MAX_SESSION_ID_CHARS:
            # Only an unusually large declaration gets here (experimental capabilities):
            # keep which capabilities the client has, not their details.
            trimmed: dict[str, Any] = {name: {} for name in state.capabilities}
            sealed = self._seal({**state._packed(), "c": trimmed})
        return sealed

    def _seal(self, packed: dict[str, Any]) -> str:
        plain = zlib.compress(json.dumps(packed, separators=(",", ":")).encode(), 9)
        nonce = os.urandom(_NONCE_BYTES)
        data = nonce + self._cipher.encrypt(nonce, plain, _AAD)
        return PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    def open(self, session_id: str) -> SessionState | None:
        """The state sealed in `session_id`, or None if it is not one of ours (forged,
        altered, sealed under another secret key, or malformed)."""
        if not session_id.startswith(PREFIX) or len(session_id) > MAX_SESSION_ID_CHARS:
            return None
        encoded = session_id[len(PREFIX) :]
        try:
            data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            plain = self._cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], _AAD)
            packed = json.loads(zlib.decompress(plain))
            return SessionState(
                key=_text(packed["k"]),
                server_id=_text(packed["s"]),
                principal=_text(packed["p"]),
                end_user_id=None if packed["u"] is None else _text(packed["u"]),
                protocol_version=_text(packed["v"]),
                capabilities=dict(packed["c"]),
                client_info=dict(packed["i"]),
            )
        except (binascii.Error, ValueError, InvalidTag, zlib.error, KeyError, TypeError):
            return None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("sealed session field is not text")
    return value
