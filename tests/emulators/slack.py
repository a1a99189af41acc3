"""Slack Web API emulator: chat.postMessage, chat.update, reactions.add, conversations.open,
conversations.list, conversations.history and users.list.

As Slack does: every answer is HTTP 200 with `ok`; a missing token is `not_authed`, a wrong
one `invalid_auth`; write methods read a JSON body, read methods the query string; list
methods page with an opaque base64 cursor in `response_metadata.next_cursor`.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulators.faults import Recorder

BOT_USER = "U0BOT00001"
BOT_ID = "B0BOT00001"


def _channel(cid: str, name: str, *, member: bool = True, archived: bool = False) -> dict[str, Any]:
    return {
        "id": cid,
        "name": name,
        "is_channel": True,
        "is_private": False,
        "is_archived": archived,
        "is_member": member,
        "created": 1700000000,
        "topic": {"value": ""},
        "purpose": {"value": f"The {name} channel"},
        "num_members": 3,
    }


def _user(uid: str, name: str, real_name: str) -> dict[str, Any]:
    return {
        "id": uid,
        "team_id": "T0TEAM0001",
        "name": name,
        "real_name": real_name,
        "deleted": False,
        "is_bot": False,
        "profile": {"real_name": real_name, "display_name": name},
    }


@dataclass
class SlackEmulator:
    token: str
    # Set once served: the address connections use as their base URL.
    url: str = ""
    recorder: Recorder = field(default_factory=Recorder)
    # Real Slack may answer fewer items than `limit` (it filters after paginating).
    page_cap: int | None = None
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Newest last, as posted.
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for channel in (
            _channel("C01GENERAL", "general"),
            _channel("C02RANDOM0", "random"),
            _channel("C03DEPLOYS", "deploys"),
            _channel("C04OUTSIDE", "outside", member=False),
            _channel("C05OLDSTUF", "old-stuff", archived=True),
        ):
            self.channels[channel["id"]] = channel
            self.messages[channel["id"]] = []
        for user in (
            _user("U01ALICE00", "alice", "Alice Archer"),
            _user("U02BOB0000", "bob", "Bob Baker"),
            _user("U03CAROL00", "carol", "Carol Cook"),
        ):
            self.users[user["id"]] = user

    def post(self, channel: str, text: str, user: str = "U01ALICE00") -> dict[str, Any]:
        """A message as if someone else had posted it."""
        ts = self._next_ts()
        message = {"type": "message", "user": user, "text": text, "ts": ts}
        self.messages[channel].append(message)
        return message

    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"{1706800000 + n}.{n:06d}"

    @cached_property
    def app(self) -> Starlette:
        methods = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "reactions.add": self._react,
            "conversations.open": self._open,
        }
        reads = {
            "conversations.list": self._list_channels,
            "users.list": self._list_users,
            "conversations.history": self._history,
        }
        routes = [
            self.recorder.route(f"/api/{name}", self._write(handler), ["POST"])
            for name, handler in methods.items()
        ] + [
            self.recorder.route(f"/api/{name}", self._read(handler), ["GET"])
            for name, handler in reads.items()
        ]
        return Starlette(routes=routes)

    # -- plumbing ---------------------------------------------------------------------------

    def _auth_error(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return "not_authed"
        return None if header.removeprefix("Bearer ") == self.token else "invalid_auth"

    def _write(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            failed = self._auth_error(request)
            if failed:
                return _fail(failed)
            content_type = request.headers.get("content-type", "")
            if not content_type.startswith("application/json"):
                return _fail("invalid_arguments")
            try:
                body = json.loads(await request.body())
            except ValueError:
                return _fail("invalid_json")
            if not isinstance(body, dict):
                return _fail("invalid_json")
            answer: Response = handler(body)
            return answer

        return endpoint

    def _read(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            failed = self._auth_error(request)
            if failed:
                return _fail(failed)
            answer: Response = handler(dict(request.query_params))
            return answer

        return endpoint

    def _find_channel(self, ref: Any) -> dict[str, Any] | None:
        if not isinstance(ref, str):
            return None
        if ref in self.channels:
            return self.channels[ref]
        name = ref.removeprefix("#")
        return next((c for c in self.channels.values() if c["name"] == name), None)

    def _writable(self, ref: Any) -> dict[str, Any] | Response:
        channel = self._find_channel(ref)
        if channel is None:
            return _fail("channel_not_found")
        if channel["is_archived"]:
            return _fail("is_archived")
        if not channel["is_member"]:
            return _fail("not_in_channel")
        return channel

    def _message(self, channel: str, ts: Any) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    # -- methods ----------------------------------------------------------------------------

    def _post_message(self, body: dict[str, Any]) -> Response:
        channel = self._writable(body.get("channel"))
        if isinstance(channel, Response):
            return channel
        text = body.get("text")
        if not text and not body.get("blocks"):
            return _fail("no_text")
        if isinstance(text, str) and len(text) > 40000:
            return _fail("msg_too_long")
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "text": text or "",
            "ts": ts,
        }
        if body.get("blocks"):
            message["blocks"] = body["blocks"]
        if body.get("thread_ts"):
            message["thread_ts"] = body["thread_ts"]
        self.messages[channel["id"]].append(message)
        return _ok(channel=channel["id"], ts=ts, message=message)

    def _update(self, body: dict[str, Any]) -> Response:
        channel = self._find_channel(body.get("channel"))
        if channel is None or body.get("channel") != channel["id"]:
            return _fail("channel_not_found")
        message = self._message(channel["id"], body.get("ts"))
        if message is None:
            return _fail("message_not_found")
        if message.get("bot_id") != BOT_ID:
            return _fail("cant_update_message")
        if not body.get("text") and not body.get("blocks"):
            return _fail("no_text")
        message["text"] = body.get("text", "")
        message["edited"] = {"user": BOT_USER, "ts": self._next_ts()}
        return _ok(channel=channel["id"], ts=message["ts"], text=message["text"], message=message)

    def _react(self, body: dict[str, Any]) -> Response:
        channel = self._find_channel(body.get("channel"))
        if channel is None:
            return _fail("channel_not_found")
        message = self._message(channel["id"], body.get("timestamp"))
        if message is None:
            return _fail("message_not_found")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return _fail("invalid_name")
        reactions = message.setdefault("reactions", [])
        for reaction in reactions:
            if reaction["name"] == name:
                if BOT_USER in reaction["users"]:
                    return _fail("already_reacted")
                reaction["users"].append(BOT_USER)
                reaction["count"] += 1
                return _ok()
        reactions.append({"name": name, "users": [BOT_USER], "count": 1})
        return _ok()

    def _open(self, body: dict[str, Any]) -> Response:
        user = body.get("users")
        if not isinstance(user, str) or not user:
            return _fail("users_list_not_supplied")
        if user not in self.users:
            return _fail("user_not_found")
        dm = f"D{user[1:]}"
        if dm not in self.channels:
            self.channels[dm] = {
                "id": dm,
                "is_im": True,
                "user": user,
                "is_member": True,
                "is_archived": False,
                "name": dm,
            }
            self.messages[dm] = []
        return _ok(channel={"id": dm})

    def _list_channels(self, query: dict[str, str]) -> Response:
        types = set(query.get("types", "public_channel").split(","))
        found = [
            c
            for c in self.channels.values()
            if ("im" in types if c.get("is_im") else "public_channel" in types)
            and not (query.get("exclude_archived") == "true" and c["is_archived"])
        ]
        return _page(query, "channels", found, cap=self.page_cap)

    def _list_users(self, query: dict[str, str]) -> Response:
        return _page(
            query, "members", list(self.users.values()), cap=self.page_cap, cache_ts=1706800000
        )

    def _history(self, query: dict[str, str]) -> Response:
        channel = self._find_channel(query.get("channel"))
        if channel is None or query.get("channel") != channel["id"]:
            return _fail("channel_not_found")
        if not channel["is_member"]:
            return _fail("not_in_channel")
        newest_first = list(reversed(self.messages[channel["id"]]))
        return _page(query, "messages", newest_first, cap=self.page_cap, pin_count=0)


def _ok(**fields: Any) -> Response:
    return JSONResponse({"ok": True, **fields})


def _fail(error: str) -> Response:
    return JSONResponse({"ok": False, "error": error})


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _page(
    query: dict[str, str], key: str, items: list[Any], *, cap: int | None, **extra: Any
) -> Response:
    try:
        limit = int(query.get("limit", "100"))
        start = 0
        if query.get("cursor"):
            start = int(base64.b64decode(query["cursor"]).decode().removeprefix("offset:"))
    except ValueError:
        return _fail("invalid_cursor")
    if limit < 1:
        return _fail("invalid_limit")
    end = start + min(limit, cap or limit)
    next_cursor = _cursor(end) if end < len(items) else ""
    answer = {key: items[start:end], **extra, "response_metadata": {"next_cursor": next_cursor}}
    if key == "messages":
        answer["has_more"] = bool(next_cursor)
    return _ok(**answer)
