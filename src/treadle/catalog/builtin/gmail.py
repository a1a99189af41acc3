"""Gmail: send, search, read, draft and reply as the connected Google account.

API: https://gmail.googleapis.com/gmail/v1/users/me (a connection's base URL override replaces
that whole prefix). Messages go out as RFC 2822 built by the `email` package (`gmail_mime`);
errors and rate limits are Google's (`providers.google`). Outputs are Gmail's resources
(`id`, `threadId`, `labelIds`, ...), with messages read into headers and text.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from typing import Any

import anyio

from treadle.catalog.builtin import gmail_mime
from treadle.catalog.model import Action, ActionContext, AuthKind, Integration, JSONObject
from treadle.catalog.providers.annotations import CREATE, READ
from treadle.catalog.providers.google import google_provider
from treadle.catalog.providers.pagination import Page, collect, page_of
from treadle.catalog.providers.rest import RestClient, segment
from treadle.catalog.providers.schema import SETTINGS_SCHEMA, object_schema
from treadle.errors import TreadleError

GMAIL = google_provider("Gmail", "https://gmail.googleapis.com/gmail/v1/users/me")
MAX_SEARCH_RESULTS = 100
LIST_PAGE_SIZE = 100
# Message summaries are fetched a few at a time: fast, yet gentle on the per-user quota.
CONCURRENT_FETCHES = 5
_SUMMARY_HEADERS = ["From", "To", "Subject", "Date"]
_REPLY_HEADERS = ["Subject", "From", "To", "Cc", "Reply-To", "Message-ID", "References"]


def _draft(data: JSONObject) -> gmail_mime.Draft:
    return gmail_mime.Draft(
        to=data["to"],
        cc=data.get("cc", ()),
        bcc=data.get("bcc", ()),
        subject=data["subject"],
        text=data["body"],
        html=data.get("html_body"),
        reply_to=data.get("reply_to"),
    )


async def send_email(ctx: ActionContext, data: JSONObject) -> JSONObject:
    raw = gmail_mime.encode(_draft(data))
    return await RestClient(ctx, GMAIL).json_object("POST", "/messages/send", body={"raw": raw})


async def create_draft(ctx: ActionContext, data: JSONObject) -> JSONObject:
    message: JSONObject = {"raw": gmail_mime.encode(_draft(data))}
    return await RestClient(ctx, GMAIL).json_object("POST", "/drafts", body={"message": message})


async def get_message(ctx: ActionContext, data: JSONObject) -> JSONObject:
    path = f"/messages/{segment(data['message_id'])}"
    found = await RestClient(ctx, GMAIL).json_object("GET", path, params={"format": "full"})
    return gmail_mime.read(found)


async def _metadata(client: RestClient, message_id: str, headers: list[str]) -> JSONObject:
    return await client.json_object(
        "GET",
        f"/messages/{segment(message_id)}",
        params={"format": "metadata", "metadataHeaders": headers},
    )


def _summary(message: JSONObject) -> JSONObject:
    headers = gmail_mime.header_values(message.get("payload"))
    return {
        "id": message.get("id"),
        "threadId": message.get("threadId"),
        "labelIds": message.get("labelIds", []),
        "snippet": message.get("snippet", ""),
        "internalDate": message.get("internalDate"),
        "from": headers.get("From"),
        "to": headers.get("To"),
        "subject": headers.get("Subject"),
        "date": headers.get("Date"),
    }


@dataclass
class _Fetched:
    summaries: dict[int, JSONObject]
    failure: TreadleError | None = None


async def _summaries(client: RestClient, ids: list[str]) -> list[JSONObject]:
    fetched = _Fetched({})
    limiter = anyio.CapacityLimiter(CONCURRENT_FETCHES)

    async def fetch(index: int, message_id: str) -> None:
        async with limiter:
            if fetched.failure is not None:
                return
            try:
                message = await _metadata(client, message_id, _SUMMARY_HEADERS)
            except TreadleError as failure:
                # Kept, not raised: a task group would wrap it in an ExceptionGroup.
                fetched.failure = fetched.failure or failure
                return
            fetched.summaries[index] = _summary(message)

    async with anyio.create_task_group() as tasks:
        for index, message_id in enumerate(ids):
            tasks.start_soon(fetch, index, message_id)
    if fetched.failure is not None:
        raise fetched.failure
    return [fetched.summaries[index] for index in range(len(ids))]


async def search_messages(ctx: ActionContext, data: JSONObject) -> JSONObject:
    client = RestClient(ctx, GMAIL)
    estimate: Any = 0

    async def fetch(cursor: str | None, size: int) -> Page:
        nonlocal estimate
        answer = await client.json_object(
            "GET",
            "/messages",
            params={
                "q": data.get("query"),
                "maxResults": size,
                "pageToken": cursor,
                "includeSpamTrash": data.get("include_spam_trash", False),
            },
        )
        estimate = answer.get("resultSizeEstimate", estimate)
        return page_of(answer.get("messages"), answer.get("nextPageToken"))

    page = await collect(
        fetch,
        limit=data.get("limit", 10),
        page_size=LIST_PAGE_SIZE,
        cursor=data.get("page_token"),
    )
    messages = [item for item in page.items if isinstance(item, dict) and "id" in item]
    if data.get("include_details", True):
        messages = await _summaries(client, [str(item["id"]) for item in messages])
    return {
        "messages": messages,
        "nextPageToken": page.next_cursor,
        "resultSizeEstimate": estimate,
    }


def _one_line(value: str | None) -> str:
    """A header value taken from a received message: decoding may have produced line breaks,
    which a header being written must not contain."""
    return " ".join((value or "").split())


def _subject(original: str | None) -> str:
    subject = _one_line(original)
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}".rstrip()


async def reply_to_message(ctx: ActionContext, data: JSONObject) -> JSONObject:
    client = RestClient(ctx, GMAIL)
    original = await _metadata(client, data["message_id"], _REPLY_HEADERS)
    headers = gmail_mime.header_values(original.get("payload"))
    to = gmail_mime.addresses(headers.get("Reply-To") or headers.get("From"))
    cc: list[Address] = []
    if data.get("reply_all", False):
        profile = await client.json_object("GET", "/profile")
        seen = {str(profile.get("emailAddress", "")).lower()}
        seen.update(address.addr_spec.lower() for address in to)
        for address in gmail_mime.addresses(headers.get("To"), headers.get("Cc")):
            if address.addr_spec.lower() not in seen:
                seen.add(address.addr_spec.lower())
                cc.append(address)
    message_id = _one_line(headers.get("Message-ID")) or None
    references = _one_line(f"{headers.get('References', '')} {message_id or ''}") or None
    draft = gmail_mime.Draft(
        to=[str(address) for address in to],
        cc=[str(address) for address in cc],
        subject=_subject(headers.get("Subject")),
        text=data["body"],
        html=data.get("html_body"),
        in_reply_to=message_id,
        references=references,
    )
    body: JSONObject = {"raw": gmail_mime.encode(draft)}
    if isinstance(original.get("threadId"), str):
        body["threadId"] = original["threadId"]
    return await client.json_object("POST", "/messages/send", body=body)


_NO_NEWLINES = "^[^\\r\\n]*$"
_ADDRESS = {
    "type": "string",
    "minLength": 3,
    "maxLength": 320,
    "pattern": "^[^\\r\\n]*@[^\\r\\n]*$",
}
_ADDRESSES = {
    "type": "array",
    "items": _ADDRESS,
    "maxItems": 100,
}
_ADDRESS_FORMAT = 'Addresses such as jane@example.com or "Jane Smith <jane@example.com>".'
_BODY = {
    "type": "string",
    "maxLength": 1_000_000,
    "description": "Plain-text body.",
}
_HTML = {
    "type": "string",
    "maxLength": 1_000_000,
    "description": "Optional HTML body, sent alongside the plain text.",
}
_MESSAGE_ID = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_-]{1,100}$",
    "description": "Gmail message ID, as returned by search_messages.",
}
_COMPOSE = object_schema(
    {
        "to": {**_ADDRESSES, "minItems": 1, "description": f"Recipients. {_ADDRESS_FORMAT}"},
        "cc": {**_ADDRESSES, "description": "Copy recipients."},
        "bcc": {**_ADDRESSES, "description": "Blind-copy recipients."},
        "subject": {
            "type": "string",
            "maxLength": 998,
            "pattern": _NO_NEWLINES,
            "description": "Subject line.",
        },
        "body": _BODY,
        "html_body": _HTML,
        "reply_to": {**_ADDRESS, "description": "Address replies should go to."},
    },
    ["to", "subject", "body"],
)
_SEARCH = object_schema(
    {
        "query": {
            "type": "string",
            "maxLength": 2000,
            "description": (
                "Gmail search, as typed in Gmail's search box: from:jane@example.com "
                "subject:invoice is:unread newer_than:7d. Empty lists the newest messages."
            ),
        },
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_SEARCH_RESULTS,
            "default": 10,
            "description": f"Most messages to return (at most {MAX_SEARCH_RESULTS}).",
        },
        "page_token": {
            "type": "string",
            "maxLength": 2000,
            "description": "Continue a previous search with its `nextPageToken`.",
        },
        "include_details": {
            "type": "boolean",
            "default": True,
            "description": "Add from, to, subject, date and snippet to each message.",
        },
        "include_spam_trash": {
            "type": "boolean",
            "default": False,
            "description": "Also search Spam and Trash.",
        },
    }
)
_GET = object_schema({"message_id": _MESSAGE_ID}, ["message_id"])
_REPLY = object_schema(
    {
        "message_id": {**_MESSAGE_ID, "description": "ID of the message to answer."},
        "body": _BODY,
        "html_body": _HTML,
        "reply_all": {
            "type": "boolean",
            "default": False,
            "description": "Also copy everyone the message was sent to (but yourself).",
        },
    },
    ["message_id", "body"],
)

integration = Integration(
    name="gmail",
    display_name="Gmail",
    description="Send, search, read, draft and reply to email as the connected Gmail account.",
    auth_kind=AuthKind.OAUTH2,
    settings_schema=SETTINGS_SCHEMA,
    actions=(
        Action(
            name="send_email",
            display_name="Send email",
            description="Send an email. Returns the sent message's `id`, `threadId` and labels.",
            input_schema=_COMPOSE,
            run=send_email,
            annotations=CREATE,
        ),
        Action(
            name="search_messages",
            display_name="Search messages",
            description=(
                "Search the mailbox with Gmail's query syntax, newest first: `messages` "
                "(each with `id`, `threadId` and, by default, from/to/subject/date/snippet) "
                "and `nextPageToken` to continue."
            ),
            input_schema=_SEARCH,
            run=search_messages,
            annotations=READ,
        ),
        Action(
            name="get_message",
            display_name="Get message",
            description=(
                "Read one message: its `headers` (From, To, Subject, Date, ...), `textBody`, "
                "`htmlBody` and `attachments` (names and sizes only)."
            ),
            input_schema=_GET,
            run=get_message,
            annotations=READ,
        ),
        Action(
            name="create_draft",
            display_name="Create draft",
            description=(
                "Save an email as a draft without sending it. Returns the draft's `id` and "
                "its `message`."
            ),
            input_schema=_COMPOSE,
            run=create_draft,
            annotations=CREATE,
        ),
        Action(
            name="reply_to_message",
            display_name="Reply to message",
            description=(
                "Reply to a message in its thread, to its sender (or Reply-To), quoting the "
                "subject with Re:. Returns the sent reply's `id` and `threadId`."
            ),
            input_schema=_REPLY,
            run=reply_to_message,
            annotations=CREATE,
        ),
    ),
)
