"""RFC 2822 messages for Gmail: built with the standard `email` package, read from Gmail's
parsed `payload` tree.

Gmail takes a whole message as base64url `raw` and gives one back as MIME parts whose bodies
are base64url `data`; everything here is about those two conversions.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.policy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from treadle.catalog.model import JSONObject
from treadle.errors import ValidationFailed

# Headers worth showing a reader; the rest (Received, DKIM, ...) is transport detail.
READABLE_HEADERS = (
    "From",
    "To",
    "Cc",
    "Bcc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
)
MAX_BODY_CHARS = 100_000


@dataclass(frozen=True, slots=True)
class Draft:
    """What goes into a new message."""

    to: Sequence[str]
    subject: str
    text: str
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    html: str | None = None
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: str | None = None


def encode(draft: Draft) -> str:
    """The message as Gmail's `raw`: RFC 2822 bytes, base64url."""
    message = EmailMessage(policy=email.policy.SMTP)
    headers = {
        "To": ", ".join(draft.to),
        "Cc": ", ".join(draft.cc),
        # Gmail delivers to Bcc recipients and strips the header before sending.
        "Bcc": ", ".join(draft.bcc),
        "Subject": draft.subject,
        "Reply-To": draft.reply_to,
        "In-Reply-To": draft.in_reply_to,
        "References": draft.references,
    }
    for name, value in headers.items():
        if value:
            try:
                message[name] = value
            except (ValueError, IndexError) as exc:
                # The header registry refuses addresses it cannot parse (IndexError included).
                raise ValidationFailed(
                    f"Invalid {name} header value", field=name.lower().replace("-", "_")
                ) from exc
    message.set_content(draft.text)
    if draft.html is not None:
        message.add_alternative(draft.html, subtype="html")
    return base64.urlsafe_b64encode(message.as_bytes()).decode("ascii")


def addresses(*values: str | None) -> list[Address]:
    """Every mailbox named in some address headers, in order."""
    found = []
    for name, addr in getaddresses([value for value in values if value]):
        if "@" in addr:
            username, _, domain = addr.rpartition("@")
            found.append(Address(display_name=name, username=username, domain=domain))
    return found


def header_values(payload: Any) -> dict[str, str]:
    """The readable headers of a message part, RFC 2047 encoded words decoded."""
    wanted = {name.lower(): name for name in READABLE_HEADERS}
    found: dict[str, str] = {}
    raw = payload.get("headers", []) if isinstance(payload, dict) else []
    for item in raw:
        if not isinstance(item, dict):
            continue
        name = wanted.get(str(item.get("name", "")).lower())
        if name is not None and name not in found:
            found[name] = _decoded(str(item.get("value", "")))
    return found


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeDecodeError, binascii.Error, ValueError):
        return value


def read(message: JSONObject) -> JSONObject:
    """A Gmail message (format=full) as headers, text and HTML bodies, and attachments."""
    payload = message.get("payload", {})
    text: list[str] = []
    html: list[str] = []
    attachments: list[JSONObject] = []
    for part in _parts(payload):
        found = part.get("body")
        body: JSONObject = found if isinstance(found, dict) else {}
        mime_type = str(part.get("mimeType", "")).lower()
        if part.get("filename"):
            attachments.append(
                {
                    "filename": part["filename"],
                    "mimeType": mime_type,
                    "size": body.get("size", 0),
                    "attachmentId": body.get("attachmentId"),
                    "partId": part.get("partId"),
                }
            )
        elif mime_type in ("text/plain", "text/html") and "data" in body:
            (text if mime_type == "text/plain" else html).append(_body_text(part, body["data"]))
    text_body, text_cut = _limited("\n".join(text)) if text else (None, False)
    html_body, html_cut = _limited("\n".join(html)) if html else (None, False)
    return {
        "id": message.get("id"),
        "threadId": message.get("threadId"),
        "labelIds": message.get("labelIds", []),
        "snippet": message.get("snippet", ""),
        "internalDate": message.get("internalDate"),
        "headers": header_values(payload),
        "textBody": text_body,
        "htmlBody": html_body,
        "truncated": text_cut or html_cut,
        "attachments": attachments,
    }


def _parts(part: Any) -> Iterator[JSONObject]:
    if not isinstance(part, dict):
        return
    yield part
    for child in part.get("parts", []) or []:
        yield from _parts(child)


def _body_text(part: JSONObject, data: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return ""
    return raw.decode(_charset(part), errors="replace")


def _charset(part: JSONObject) -> str:
    for item in part.get("headers", []) or []:
        if isinstance(item, dict) and str(item.get("name", "")).lower() == "content-type":
            params = EmailMessage()
            try:
                params["Content-Type"] = str(item.get("value", ""))
                charset = params.get_content_charset()
                return codecs.lookup(charset).name if charset else "utf-8"
            except (ValueError, LookupError):
                break
    return "utf-8"


def _limited(text: str) -> tuple[str, bool]:
    if len(text) <= MAX_BODY_CHARS:
        return text, False
    return text[:MAX_BODY_CHARS], True
