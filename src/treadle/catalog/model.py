"""What an integration plugin declares, and what its actions receive when they run.

An integration is a plain object registered through the `treadle.integrations` entry-point
group; built-ins register the same way. Actions never see the database or other tenants: they
get an `ActionContext` holding exactly the connection, settings, HTTP client and (for stateful
integrations) the state namespace the pipeline resolved for this one call.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

import httpx2

JSONObject = dict[str, Any]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class AuthKind(StrEnum):
    NONE = "none"
    API_KEY = "api_key"
    BEARER = "bearer"
    BASIC = "basic"
    OAUTH2 = "oauth2"
    CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class ActionAnnotations:
    """MCP tool hints; defaults are the spec's cautious ones."""

    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = True


@dataclass(frozen=True, slots=True)
class ConnectionCredentials:
    """A resolved connection, secrets decrypted, for one call only."""

    id: str
    external_id: str
    type: str
    values: Mapping[str, str]
    base_url: str | None = None


class StateStore(Protocol):
    """Key/value state of one namespace (a workspace integration, maybe one end user)."""

    async def get(self, key: str) -> Any | None: ...

    async def put(self, key: str, value: Any) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def list_keys(self, prefix: str | None, limit: int) -> list[str]: ...

    async def update(self, key: str, change: Callable[[Any | None], Any | None]) -> Any | None:
        """Atomically replace the value with `change(old)`; None deletes. Returns the new value."""
        ...


# -- Rich results: what an action may return instead of plain JSON ---------------------------


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Image:
    data: bytes
    mime_type: str


@dataclass(frozen=True, slots=True)
class Audio:
    data: bytes
    mime_type: str


@dataclass(frozen=True, slots=True)
class EmbeddedResource:
    """A resource inlined in a result: `text` or binary `blob`, never both."""

    uri: str
    mime_type: str
    text: str | None = None
    blob: bytes | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.blob is None):
            raise ValueError("an embedded resource has exactly one of text and blob")


ContentBlock = Text | Image | Audio | EmbeddedResource


def content_block_json(block: ContentBlock) -> JSONObject:
    """A block in MCP's wire shape (binary data base64-encoded); REST answers the same."""
    match block:
        case Text(text=text):
            return {"type": "text", "text": text}
        case Image(data=data, mime_type=mime) | Audio(data=data, mime_type=mime):
            kind = "image" if isinstance(block, Image) else "audio"
            return {"type": kind, "data": base64.b64encode(data).decode(), "mimeType": mime}
        case EmbeddedResource(uri=uri, mime_type=mime, text=text, blob=blob):
            resource: JSONObject = {"uri": uri, "mimeType": mime}
            if text is not None:
                resource["text"] = text
            else:
                assert blob is not None
                resource["blob"] = base64.b64encode(blob).decode()
            return {"type": "resource", "resource": resource}


class ToolContent(dict[str, Any]):
    """Content blocks an action returns instead of JSON output.

    It is its JSON form too (`{"content": [...], "structured": {...}?}`), so every face that
    only knows JSON (REST, activity) still answers something meaningful; the MCP face maps
    `blocks` to MCP content blocks and `structured` to `structuredContent`.
    """

    def __init__(self, blocks: Sequence[ContentBlock], structured: JSONObject | None = None):
        super().__init__(content=[content_block_json(block) for block in blocks])
        if structured is not None:
            self["structured"] = structured
        self.blocks: tuple[ContentBlock, ...] = tuple(blocks)
        self.structured = structured

    @classmethod
    def from_wire(
        cls, content: Sequence[JSONObject], structured: JSONObject | None = None
    ) -> ToolContent:
        """Blocks already in MCP's wire shape (an upstream MCP server's), kept exactly as
        they came: every field of every block kind, annotations and `_meta` included.
        `blocks` is empty; faces read `self["content"]`."""
        made = cls(())
        made["content"] = [dict(block) for block in content]
        if structured is not None:
            made["structured"] = structured
        made.structured = structured
        return made


# -- Talking back to the MCP client while an action runs ------------------------------------

LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


class ClientCapabilityMissing(Exception):
    """The client did not declare what the action asked of it (`sampling`, `elicitation`)."""

    def __init__(self, capability: str) -> None:
        super().__init__(f"The MCP client does not support {capability}")
        self.capability = capability


class ClientInteractionUnavailable(Exception):
    """This transport or protocol era cannot carry a request to the client mid-call."""


@dataclass(frozen=True, slots=True)
class Elicited:
    """What the user answered: `action` is "accept", "decline" or "cancel"."""

    action: str
    content: JSONObject | None = None


class ClientInteraction(Protocol):
    """The MCP client of the current call (`ActionContext.client`; None outside MCP).

    `progress` and `log` never fail (they are dropped when the client did not ask for them).
    `elicit` and `sample` raise `ClientCapabilityMissing` when the client did not declare the
    capability, and `ClientInteractionUnavailable` where the protocol cannot carry them.
    """

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None: ...

    async def log(self, level: LogLevel, data: Any, logger: str | None = None) -> None: ...

    async def elicit(self, message: str, schema: JSONObject) -> Elicited: ...

    async def sample(self, prompt: str, *, max_tokens: int, system: str | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class ActionContext:
    workspace_id: str
    integration_alias: str
    action_name: str
    end_user_id: str | None
    connection: ConnectionCredentials | None
    settings: Mapping[str, Any]
    http: httpx2.AsyncClient
    state: StateStore | None = None
    # The MCP client of this call, when the call came over MCP.
    client: ClientInteraction | None = None


RunFn = Callable[[ActionContext, JSONObject], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    display_name: str
    description: str
    input_schema: JSONObject
    run: RunFn
    output_schema: JSONObject | None = None
    annotations: ActionAnnotations = field(default_factory=ActionAnnotations)


@dataclass(frozen=True, slots=True)
class Integration:
    name: str
    display_name: str
    description: str
    auth_kind: AuthKind
    actions: tuple[Action, ...]
    # Stateful integrations get a StateStore scoped by `settings.persistence.scope`.
    stateful: bool = False
    # JSON Schema of the workspace integration's `settings` object (validated on write).
    settings_schema: JSONObject = field(
        default_factory=lambda: {"type": "object", "additionalProperties": True}
    )

    def action(self, name: str) -> Action | None:
        for action in self.actions:
            if action.name == name:
                return action
        return None

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(action.name for action in self.actions)
