"""Slack: post, update and react to messages; list channels, users and channel history.

Web API conventions (https://api.slack.com/web): methods live at `{base}/{method}`; write
methods take a JSON body, read methods a query string; every answer is HTTP 200 with `ok`,
and a failure is `ok: false` plus an `error` code (`channel_not_found`, ...), which becomes the
upstream error's code. Rate limits are HTTP 429 with `Retry-After`. Outputs are Slack's own
answers, unchanged.
"""

from __future__ import annotations

from typing import Any

import httpx2

from treadle.catalog.model import Action, ActionContext, AuthKind, Integration, JSONObject
from treadle.catalog.providers import retry
from treadle.catalog.providers.annotations import CREATE, READ, UPDATE
from treadle.catalog.providers.failures import (
    http_failure,
    invalid_response,
    reauthenticate,
    status_code_name,
)
from treadle.catalog.providers.pagination import Page, collect, page_of
from treadle.catalog.providers.rest import Provider, RateLimit, RestClient, pick
from treadle.catalog.providers.schema import SETTINGS_SCHEMA, choice, object_schema
from treadle.errors import UpstreamError

# Slack's advice: at most 200 items a page for list methods.
PAGE_SIZE = 200
MAX_LIMIT = 1000

# Errors that no change of input fixes: the token itself is gone or was never valid.
_AUTH_ERRORS = frozenset(
    {"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired"}
)
_RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
_DESCRIPTIONS = {
    "channel_not_found": "The channel does not exist or the app is not a member of it",
    "not_in_channel": "The app is not a member of the channel; invite it first",
    "is_archived": "The channel has been archived",
    "user_not_found": "No user with this ID",
    "users_not_found": "No user with this ID",
    "message_not_found": "No message with this timestamp in the channel",
    "cant_update_message": "Only messages posted by this app can be updated",
    "edit_window_closed": "The message is too old to be edited",
    "already_reacted": "This reaction was already added to the message",
    "invalid_name": "Unknown emoji name",
    "too_many_reactions": "The message has too many reactions",
    "msg_too_long": "The message text is too long",
    "no_text": "The message has no text",
    "invalid_blocks": "The blocks are not valid Block Kit",
    "invalid_cursor": "The cursor is not valid; start again without it",
    "missing_scope": "The token lacks a scope this method needs",
    "restricted_action": "A workspace preference forbids this action",
}


def _body(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _detail(error: str, body: dict[str, Any]) -> JSONObject:
    detail: JSONObject = {"message": _DESCRIPTIONS.get(error, f"Slack reported '{error}'")}
    for key in ("needed", "provided", "warning"):
        if key in body:
            detail[key] = body[key]
    metadata = body.get("response_metadata")
    if isinstance(metadata, dict) and metadata.get("messages"):
        detail["messages"] = metadata["messages"]
    return detail


def _check(response: httpx2.Response) -> None:
    body = _body(response)
    if not response.is_success:
        error = body.get("error") if isinstance(body, dict) else None
        code = error if isinstance(error, str) else status_code_name(response.status_code)
        raise http_failure("Slack", response, code, {})
    if not isinstance(body, dict):
        raise invalid_response("Slack", response)
    if body.get("ok") is True:
        return
    error = str(body.get("error") or "unknown_error")
    if error in _AUTH_ERRORS:
        raise reauthenticate("Slack", error)
    raise UpstreamError(error, _detail(error, body))


def _rate_limit(response: httpx2.Response) -> RateLimit | None:
    # Besides HTTP 429, some methods (chat.postMessage) answer `ok: false` "ratelimited".
    if response.status_code == 429:
        return RateLimit(retry.retry_after_seconds(response.headers))
    if response.is_success:
        body = _body(response)
        if isinstance(body, dict) and body.get("error") in _RATE_LIMIT_ERRORS:
            return RateLimit(retry.retry_after_seconds(response.headers))
    return None


SLACK = Provider(
    name="Slack",
    default_base_url="https://slack.com/api",
    check=_check,
    rate_limit=_rate_limit,
    # Without the charset Slack adds a `missing_charset` warning to every answer.
    headers={"content-type": "application/json; charset=utf-8"},
)


async def _post(ctx: ActionContext, method: str, body: JSONObject) -> JSONObject:
    return await RestClient(ctx, SLACK).json_object("POST", f"/{method}", body=body)


async def _paged(
    ctx: ActionContext,
    method: str,
    key: str,
    params: dict[str, Any],
    data: JSONObject,
    default_limit: int = 100,
) -> JSONObject:
    """A list method's answer holding up to `limit` items gathered over its cursor pages."""
    client = RestClient(ctx, SLACK)
    last: JSONObject = {}

    async def fetch(cursor: str | None, size: int) -> Page:
        nonlocal last
        query = {**params, "limit": size, "cursor": cursor}
        last = await client.json_object("GET", f"/{method}", params=query)
        metadata = last.get("response_metadata")
        found = metadata.get("next_cursor") if isinstance(metadata, dict) else None
        items = last.get(key)
        return page_of(items, found)

    limit = data.get("limit", default_limit)
    page = await collect(fetch, limit=limit, page_size=PAGE_SIZE, cursor=data.get("cursor"))
    return {**last, key: page.items, "response_metadata": {"next_cursor": page.next_cursor or ""}}


async def send_channel_message(ctx: ActionContext, data: JSONObject) -> JSONObject:
    body = pick(data, "channel", "text", "blocks", "thread_ts", "reply_broadcast", "unfurl_links")
    return await _post(ctx, "chat.postMessage", body)


async def send_direct_message(ctx: ActionContext, data: JSONObject) -> JSONObject:
    opened = await _post(ctx, "conversations.open", {"users": data["user"]})
    channel = opened.get("channel")
    if not isinstance(channel, dict) or not isinstance(channel.get("id"), str):
        raise UpstreamError(
            "invalid_response", {"message": "Slack opened no direct-message channel"}
        )
    body = {"channel": channel["id"], **pick(data, "text", "blocks", "unfurl_links")}
    return await _post(ctx, "chat.postMessage", body)


async def update_message(ctx: ActionContext, data: JSONObject) -> JSONObject:
    return await _post(ctx, "chat.update", pick(data, "channel", "ts", "text", "blocks"))


async def add_reaction(ctx: ActionContext, data: JSONObject) -> JSONObject:
    body = {"channel": data["channel"], "timestamp": data["timestamp"], "name": data["name"]}
    return await _post(ctx, "reactions.add", body)


async def list_channels(ctx: ActionContext, data: JSONObject) -> JSONObject:
    params = {
        "types": ",".join(data.get("types", ["public_channel"])),
        "exclude_archived": data.get("exclude_archived", True),
    }
    return await _paged(ctx, "conversations.list", "channels", params, data)


async def list_users(ctx: ActionContext, data: JSONObject) -> JSONObject:
    return await _paged(ctx, "users.list", "members", {}, data)


async def get_channel_history(ctx: ActionContext, data: JSONObject) -> JSONObject:
    params = pick(data, "channel", "oldest", "latest", "inclusive")
    answer = await _paged(ctx, "conversations.history", "messages", params, data, 50)
    # The last page's `has_more` says nothing about pages left unread after `limit`.
    answer["has_more"] = bool(answer["response_metadata"]["next_cursor"])
    return answer


_TS = {"type": "string", "pattern": "^[0-9]{1,12}\\.[0-9]{1,9}$"}
_TIME = {"type": "string", "pattern": "^[0-9]{1,12}(\\.[0-9]{1,9})?$"}
_TEXT = {
    "type": "string",
    "minLength": 1,
    "maxLength": 40000,
    "description": (
        "Message text in Slack mrkdwn (*bold*, _italic_, <https://example.com|links>, "
        "<@U01ABC23DEF> mentions). Also the notification text when `blocks` are given."
    ),
}
_BLOCKS = {
    "type": "array",
    "maxItems": 50,
    "items": {"type": "object", "required": ["type"]},
    "description": "Optional Block Kit layout blocks; `text` remains the fallback.",
}
_UNFURL = {
    "type": "boolean",
    "description": "Show previews of links in the text. Slack's default applies when omitted.",
}


def _channel(description: str) -> JSONObject:
    return choice(
        description,
        action="list_channels",
        items="channels",
        value="id",
        label="name",
        maxLength=255,
    )


_CHANNEL_ID = "Channel ID, such as C01ABC23DEF."
_LIMIT = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_LIMIT,
    "default": 100,
    "description": (
        f"Most items to return (at most {MAX_LIMIT}); more pages are fetched as needed."
    ),
}
_CURSOR = {
    "type": "string",
    "maxLength": 1000,
    "description": (
        "Continue a previous listing: pass the `response_metadata.next_cursor` it returned."
    ),
}

_SEND_CHANNEL = object_schema(
    {
        "channel": _channel(
            "Channel to post in: a channel ID such as C01ABC23DEF (or a name such as #general)."
        ),
        "text": _TEXT,
        "blocks": _BLOCKS,
        "thread_ts": {
            **_TS,
            "description": "Reply in the thread of the message with this `ts`.",
        },
        "reply_broadcast": {
            "type": "boolean",
            "description": "With `thread_ts`: also show the reply in the channel.",
        },
        "unfurl_links": _UNFURL,
    },
    ["channel", "text"],
)
_SEND_DIRECT = object_schema(
    {
        "user": choice(
            "User to message: a user ID such as U01ABC23DEF.",
            action="list_users",
            items="members",
            value="id",
            label="real_name",
            pattern="^[UW][A-Z0-9]{2,40}$",
        ),
        "text": _TEXT,
        "blocks": _BLOCKS,
        "unfurl_links": _UNFURL,
    },
    ["user", "text"],
)
_UPDATE = object_schema(
    {
        "channel": _channel(f"Channel holding the message. {_CHANNEL_ID}"),
        "ts": {**_TS, "description": "The `ts` of the message to update."},
        "text": {**_TEXT, "description": "The new message text; it replaces the old one."},
        "blocks": {**_BLOCKS, "description": "New Block Kit blocks; they replace the old ones."},
    },
    ["channel", "ts", "text"],
)
_REACTION = object_schema(
    {
        "channel": _channel(f"Channel holding the message. {_CHANNEL_ID}"),
        "timestamp": {**_TS, "description": "The `ts` of the message to react to."},
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9_+'-]{1,100}(::skin-tone-[2-6])?$",
            "description": "Emoji name without colons, such as thumbsup or white_check_mark.",
        },
    },
    ["channel", "timestamp", "name"],
)
_LIST_CHANNELS = object_schema(
    {
        "types": {
            "type": "array",
            "items": {"enum": ["public_channel", "private_channel", "mpim", "im"]},
            "minItems": 1,
            "uniqueItems": True,
            "default": ["public_channel"],
            "description": "Kinds of conversation to list; private ones need the app invited.",
        },
        "exclude_archived": {
            "type": "boolean",
            "default": True,
            "description": "Leave archived channels out.",
        },
        "limit": _LIMIT,
        "cursor": _CURSOR,
    }
)
_LIST_USERS = object_schema({"limit": _LIMIT, "cursor": _CURSOR})
_HISTORY = object_schema(
    {
        "channel": _channel(f"Channel to read. {_CHANNEL_ID}"),
        "oldest": {**_TIME, "description": "Only messages after this Unix timestamp (`ts`)."},
        "latest": {**_TIME, "description": "Only messages before this Unix timestamp (`ts`)."},
        "inclusive": {
            "type": "boolean",
            "description": "Include messages exactly at `oldest` or `latest`.",
        },
        "limit": {**_LIMIT, "default": 50},
        "cursor": _CURSOR,
    },
    ["channel"],
)

integration = Integration(
    name="slack",
    display_name="Slack",
    description=(
        "Send and update Slack messages, react to them, and list channels, users and channel "
        "history, as the connected bot or user token."
    ),
    auth_kind=AuthKind.BEARER,
    settings_schema=SETTINGS_SCHEMA,
    actions=(
        Action(
            name="send_channel_message",
            display_name="Send channel message",
            description=(
                "Post a message to a channel (or into a thread with `thread_ts`). Returns "
                "Slack's answer: `channel`, the new message's `ts` and the `message`."
            ),
            input_schema=_SEND_CHANNEL,
            run=send_channel_message,
            annotations=CREATE,
        ),
        Action(
            name="send_direct_message",
            display_name="Send direct message",
            description=(
                "Send a direct message to one user, opening the conversation if needed. "
                "Returns `channel` (the DM's ID), `ts` and the `message`."
            ),
            input_schema=_SEND_DIRECT,
            run=send_direct_message,
            annotations=CREATE,
        ),
        Action(
            name="update_message",
            display_name="Update message",
            description=(
                "Replace the text (and blocks) of a message this app posted, identified by "
                "its channel and `ts`."
            ),
            input_schema=_UPDATE,
            run=update_message,
            annotations=UPDATE,
        ),
        Action(
            name="add_reaction",
            display_name="Add reaction",
            description="Add an emoji reaction to a message, identified by channel and `ts`.",
            input_schema=_REACTION,
            run=add_reaction,
            annotations=CREATE,
        ),
        Action(
            name="list_channels",
            display_name="List channels",
            description=(
                "List channels the token can see: `channels` (each with `id` and `name`) and "
                "`response_metadata.next_cursor` to continue (empty when there are no more)."
            ),
            input_schema=_LIST_CHANNELS,
            run=list_channels,
            annotations=READ,
        ),
        Action(
            name="list_users",
            display_name="List users",
            description=(
                "List the workspace's users: `members` (each with `id`, `name`, `real_name`) "
                "and `response_metadata.next_cursor` to continue."
            ),
            input_schema=_LIST_USERS,
            run=list_users,
            annotations=READ,
        ),
        Action(
            name="get_channel_history",
            display_name="Get channel history",
            description=(
                "Read a channel's messages, newest first: `messages`, `has_more` and "
                "`response_metadata.next_cursor` to read further back."
            ),
            input_schema=_HISTORY,
            run=get_channel_history,
            annotations=READ,
        ),
    ),
)
