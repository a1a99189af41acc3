"""What an integration plugin declares, and what its actions receive when they run.

An integration is a plain object registered through the `treadle.integrations` entry-point
group; built-ins register the same way. Actions never see the database or other tenants: they
get an `ActionContext` holding exactly the connection, settings, HTTP client and (for stateful
integrations) the state namespace the pipeline resolved for this one call.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

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
