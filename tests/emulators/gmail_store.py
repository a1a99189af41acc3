"""Stored mail as Gmail's API shows it (`payload` part trees), for the Google emulator."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def _part(message: Any, part_id: str, attachments: dict[str, bytes]) -> dict[str, Any]:
    headers = [{"name": k, "value": _unfold(str(v))} for k, v in message.raw_items()]
    part: dict[str, Any] = {
        "partId": part_id,
        "mimeType": message.get_content_type(),
        "filename": message.get_filename() or "",
        "headers": headers,
    }
    if message.is_multipart():
        part["body"] = {"size": 0}
        part["parts"] = [
            _part(child, f"{part_id}.{i}" if part_id else str(i), attachments)
            for i, child in enumerate(message.get_payload())
        ]
        return part
    data: bytes = message.get_payload(decode=True) or b""
    if part["filename"]:
        attachment_id = f"att-{len(attachments)}"
        attachments[attachment_id] = data
        part["body"] = {"size": len(data), "attachmentId": attachment_id}
    else:
        part["body"] = {"size": len(data), "data": b64(data)}
    return part


@dataclass
class Mail:
    id: str
    thread_id: str
    labels: list[str]
    raw: bytes
    internal_date: int

    @cached_property
    def parsed(self) -> Any:
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    def text(self) -> str:
        body = self.parsed.get_body(("plain",))
        return "" if body is None else str(body.get_content())

    def searchable(self, name: str) -> str:
        return str(self.parsed.get(name, "")).lower()

    def resource(self, form: str, wanted: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {
            "id": self.id,
            "threadId": self.thread_id,
            "labelIds": self.labels,
            "snippet": self.text()[:100].strip(),
            "internalDate": str(self.internal_date),
            "sizeEstimate": len(self.raw),
        }
        if form == "raw":
            found["raw"] = b64(self.raw)
        elif form == "metadata":
            names = {name.lower() for name in wanted}
            payload = _part(self.parsed, "", {})
            payload["headers"] = [
                h for h in payload["headers"] if not names or h["name"].lower() in names
            ]
            found["payload"] = {k: payload[k] for k in ("partId", "mimeType", "headers")}
        elif form == "full":
            found["payload"] = _part(self.parsed, "", {})
        return found
