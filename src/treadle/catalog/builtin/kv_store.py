"""`kv-store`: JSON values in the gateway's own database, scoped per workspace integration.

`settings.persistence.scope` chooses who shares the keys: `end_user` (the default; every end
user sees only their own keys and calls need `endUserId`) or `workspace` (one shared space).
"""

from __future__ import annotations

from typing import Any

from treadle.catalog.model import (
    Action,
    ActionAnnotations,
    ActionContext,
    AuthKind,
    Integration,
    StateStore,
)
from treadle.errors import ActionRuntimeError

MAX_KEY_LENGTH = 512
MAX_LIST_KEYS = 1000

_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_LENGTH,
    "description": "The key. Any text up to 512 characters.",
}
_VALUE = {"description": "Any JSON value: object, array, string, number, boolean or null."}


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _state(ctx: ActionContext) -> StateStore:
    if ctx.state is None:
        raise ActionRuntimeError("kv-store ran without a state namespace", reason="no_state")
    return ctx.state


async def _put(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    await _state(ctx).put(data["key"], data["value"])
    return {"key": data["key"], "value": data["value"]}


async def _exists(state: StateStore, key: str) -> bool:
    # A stored JSON null reads back as None, like a missing key; the key itself tells them apart.
    return await state.list_keys(key, 1) == [key]


async def _get(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    state = _state(ctx)
    value = await state.get(data["key"])
    found = value is not None or await _exists(state, data["key"])
    return {"key": data["key"], "found": found, "value": value}


async def _delete(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    deleted = await _state(ctx).delete(data["key"])
    return {"key": data["key"], "deleted": deleted}


async def _list_keys(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    limit = int(data.get("limit", 100))
    keys = await _state(ctx).list_keys(data.get("prefix"), limit)
    return {"keys": keys, "count": len(keys)}


def _as_list(key: str, old: Any) -> list[Any]:
    if old is None:
        return []
    if not isinstance(old, list):
        raise ActionRuntimeError(f"The value at '{key[:100]}' is not a list", reason="not_a_list")
    return list(old)


async def _add_to_list(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    key, item, unique = data["key"], data["value"], bool(data.get("unique", False))

    def change(old: Any) -> list[Any]:
        items = _as_list(key, old)
        if not (unique and item in items):
            items.append(item)
        return items

    return {"key": key, "value": await _state(ctx).update(key, change)}


async def _remove_from_list(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    key, item = data["key"], data["value"]
    removed = 0
    state = _state(ctx)
    if await state.get(key) is None:
        # No list here (missing, or a stored null): nothing to remove, and nothing to write.
        return {"key": key, "value": [], "removed": 0}

    def change(old: Any) -> list[Any] | None:
        nonlocal removed
        if old is None:
            return None
        items = _as_list(key, old)
        kept = [existing for existing in items if existing != item]
        removed = len(items) - len(kept)
        return kept

    value = await state.update(key, change)
    return {"key": key, "value": value if value is not None else [], "removed": removed}


_READ = ActionAnnotations(read_only=True, destructive=False, idempotent=True, open_world=False)
_WRITE = ActionAnnotations(read_only=False, destructive=True, idempotent=True, open_world=False)
_APPEND = ActionAnnotations(read_only=False, destructive=False, idempotent=False, open_world=False)

integration = Integration(
    name="kv-store",
    display_name="Key-Value Store",
    description="Store and retrieve JSON values, kept by treadle itself.",
    auth_kind=AuthKind.NONE,
    stateful=True,
    settings_schema={
        "type": "object",
        "properties": {
            "persistence": {
                "type": "object",
                "properties": {"scope": {"enum": ["end_user", "workspace"]}},
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    },
    actions=(
        Action(
            name="put",
            display_name="Put value",
            description="Store a JSON value under a key, replacing any value already there.",
            input_schema=_schema({"key": _KEY, "value": _VALUE}, ["key", "value"]),
            run=_put,
            annotations=_WRITE,
        ),
        Action(
            name="get",
            display_name="Get value",
            description="Read the value stored under a key; `found` is false when there is none.",
            input_schema=_schema({"key": _KEY}, ["key"]),
            run=_get,
            output_schema={
                "type": "object",
                "properties": {
                    "key": {"type": "string"},
                    "found": {"type": "boolean"},
                    "value": {},
                },
                "required": ["key", "found", "value"],
            },
            annotations=_READ,
        ),
        Action(
            name="delete",
            display_name="Delete value",
            description="Delete the value stored under a key.",
            input_schema=_schema({"key": _KEY}, ["key"]),
            run=_delete,
            annotations=_WRITE,
        ),
        Action(
            name="list_keys",
            display_name="List keys",
            description="List stored keys in order, optionally only those starting with a prefix.",
            input_schema=_schema(
                {
                    "prefix": {"type": "string", "maxLength": MAX_KEY_LENGTH},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_KEYS},
                },
                [],
            ),
            run=_list_keys,
            output_schema={
                "type": "object",
                "properties": {
                    "keys": {"type": "array", "items": {"type": "string"}},
                    "count": {"type": "integer"},
                },
                "required": ["keys", "count"],
            },
            annotations=_READ,
        ),
        Action(
            name="add_to_list",
            display_name="Add to list",
            description="Append a value to the list stored under a key (created if missing). "
            "With unique=true the value is not added twice.",
            input_schema=_schema(
                {"key": _KEY, "value": _VALUE, "unique": {"type": "boolean"}}, ["key", "value"]
            ),
            run=_add_to_list,
            annotations=_APPEND,
        ),
        Action(
            name="remove_from_list",
            display_name="Remove from list",
            description="Remove every occurrence of a value from the list stored under a key.",
            input_schema=_schema({"key": _KEY, "value": _VALUE}, ["key", "value"]),
            run=_remove_from_list,
            annotations=_WRITE,
        ),
    ),
)
