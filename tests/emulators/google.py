"""Google APIs emulator: Sheets v4 (values get/append/batchUpdate, spreadsheets get/create),
Drive v3 (files.list) and Gmail v1 (messages send/list/get, drafts.create, profile).

As Google does: a missing or wrong token is 401 UNAUTHENTICATED; bad input is 400
INVALID_ARGUMENT ("Unable to parse range: ..."); unknown resources are 404 NOT_FOUND; every
error is `{"error": {"code", "message", "status"}}`. Ranges arrive percent-encoded in the path
(`values/%27Leads%27%21A1:append`), so the Sheets routes read the raw path.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import itertools
import json
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import cached_property
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulators.faults import Recorder
from emulators.gmail_store import Mail
from emulators.sheets_grid import Area, Spreadsheet, last_row, parse_area, read, write

ME = "me@example.com"
SPREADSHEET_MIME = "application/vnd.google-apps.spreadsheet"
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND"}


def google_error(code: int, message: str, status: str | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message, "status": status or _STATUS[code]}},
        status_code=code,
    )


def _not_found() -> Response:
    return google_error(404, "Requested entity was not found.")


@dataclass
class GoogleEmulator:
    token: str
    url: str = ""
    recorder: Recorder = field(default_factory=Recorder)
    spreadsheets: dict[str, Spreadsheet] = field(default_factory=dict)
    mails: dict[str, Mail] = field(default_factory=dict)
    drafts: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add_spreadsheet(self, title: str, **sheets: list[list[Any]]) -> Spreadsheet:
        n = next(self._ids)
        created = Spreadsheet(f"1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgVE2u{n:03d}", title)
        created.modified = f"2025-02-01T12:{n % 60:02d}:00.000Z"
        for name, rows in (sheets or {"Sheet1": []}).items():
            created.sheets[name] = []
            write(created.sheets[name], 0, 0, rows)
        self.spreadsheets[created.id] = created
        return created

    def receive(self, message: EmailMessage, *, labels: tuple[str, ...] = ("INBOX",)) -> Mail:
        """A message as if it had arrived in the mailbox."""
        return self._store(message.as_bytes(), list(labels), None)

    def _store(self, raw: bytes, labels: list[str], thread_id: str | None) -> Mail:
        n = next(self._ids)
        mail_id = f"{0x18D0000000000000 + n:x}"
        stored = Mail(mail_id, thread_id or mail_id, labels, raw, 1738411200000 + n * 1000)
        self.mails[mail_id] = stored
        return stored

    @cached_property
    def app(self) -> Starlette:
        route = self.recorder.route
        gmail = "/gmail/v1/users/me"
        return Starlette(
            routes=[
                route("/v4/spreadsheets", self._create_spreadsheet, ["POST"]),
                route("/v4/spreadsheets/{rest:path}", self._sheets, ["GET", "POST"]),
                route("/drive/v3/files", self._list_files, ["GET"]),
                route(f"{gmail}/messages/send", self._send, ["POST"]),
                route(f"{gmail}/messages", self._list_messages, ["GET"]),
                route(f"{gmail}/messages/{{id}}", self._get_message, ["GET"]),
                route(f"{gmail}/drafts", self._create_draft, ["POST"]),
                route(f"{gmail}/profile", self._profile, ["GET"]),
            ]
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return google_error(
                401,
                "Request is missing required authentication credential. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
            )
        if header.removeprefix("Bearer ") != self.token:
            return google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        return None

    async def _json(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return google_error(400, "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return google_error(400, "Invalid JSON payload received. Expected an object.")
        return body

    # -- Sheets -----------------------------------------------------------------------------

    async def _sheets(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        raw_path = request.scope["raw_path"].decode().removeprefix("/v4/spreadsheets/")
        spreadsheet_id, _, tail = raw_path.partition("/")
        spreadsheet_id, _, method = spreadsheet_id.partition(":")
        sheet = self.spreadsheets.get(unquote(spreadsheet_id))
        if sheet is None:
            return _not_found()
        if request.method == "GET" and not tail and not method:
            return JSONResponse(sheet.resource())
        if request.method == "POST" and tail == "values:batchUpdate":
            return await self._batch_update(request, sheet)
        if not tail.startswith("values/"):
            return _not_found()
        range_part, _, action = tail.removeprefix("values/").partition(":")
        text = unquote(range_part)
        area = parse_area(text)
        if area is None or area.sheet not in sheet.sheets:
            return google_error(400, f"Unable to parse range: {text}")
        if request.method == "GET" and not action:
            return self._get_values(sheet, area)
        if request.method == "POST" and action == "append":
            return await self._append(request, sheet, area)
        return _not_found()

    def _get_values(self, sheet: Spreadsheet, area: Area) -> Response:
        rows = read(sheet.grid(area.sheet), area)
        answer: dict[str, Any] = {"range": area.a1(), "majorDimension": "ROWS"}
        if rows:
            answer["values"] = rows
        return JSONResponse(answer)

    def _value_input(self, option: Any) -> Response | None:
        if option is None:
            return google_error(400, "'valueInputOption' is required but not specified")
        if option not in ("RAW", "USER_ENTERED"):
            return google_error(400, f"Invalid valueInputOption: {option}")
        return None

    async def _append(self, request: Request, sheet: Spreadsheet, area: Area) -> Response:
        invalid = self._value_input(request.query_params.get("valueInputOption"))
        if invalid is not None:
            return invalid
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        rows = body.get("values")
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            return google_error(400, "Invalid values: expected a list of rows")
        grid = sheet.grid(area.sheet)
        last = last_row(grid)
        width = max((len(row) for row in rows), default=1)
        write(grid, last + 1, area.left, rows)
        updated = Area(area.sheet, last + 1, area.left, last + len(rows), area.left + width - 1)
        table_width = max((len(row) for row in grid[: last + 1]), default=1)
        table = Area(area.sheet, 0, 0, max(last, 0), max(table_width, 1) - 1)
        return JSONResponse(
            {
                "spreadsheetId": sheet.id,
                "tableRange": table.a1(),
                "updates": {
                    "spreadsheetId": sheet.id,
                    "updatedRange": updated.a1(),
                    "updatedRows": len(rows),
                    "updatedColumns": width,
                    "updatedCells": sum(len(row) for row in rows),
                },
            }
        )

    async def _batch_update(self, request: Request, sheet: Spreadsheet) -> Response:
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        invalid = self._value_input(body.get("valueInputOption"))
        if invalid is not None:
            return invalid
        responses = []
        rows_touched: set[tuple[str, int]] = set()
        for item in body.get("data", []):
            area = parse_area(str(item.get("range", "")))
            if area is None or area.sheet not in sheet.sheets:
                return google_error(400, f"Unable to parse range: {item.get('range')}")
            rows = item.get("values", [])
            write(sheet.grid(area.sheet), area.top, area.left, rows)
            width = max((len(row) for row in rows), default=0)
            bottom = area.top + len(rows) - 1
            rows_touched.update((area.sheet, r) for r in range(area.top, bottom + 1))
            responses.append(
                {
                    "spreadsheetId": sheet.id,
                    "updatedRange": Area(
                        area.sheet, area.top, area.left, bottom, area.left + width - 1
                    ).a1(),
                    "updatedRows": len(rows),
                    "updatedColumns": width,
                    "updatedCells": sum(len(row) for row in rows),
                }
            )
        return JSONResponse(
            {
                "spreadsheetId": sheet.id,
                "totalUpdatedRows": len(rows_touched),
                "totalUpdatedColumns": sum(r["updatedColumns"] for r in responses),
                "totalUpdatedCells": sum(r["updatedCells"] for r in responses),
                "totalUpdatedSheets": len({sheet for sheet, _ in rows_touched}),
                "responses": responses,
            }
        )

    async def _create_spreadsheet(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        title = body.get("properties", {}).get("title") or "Untitled spreadsheet"
        created = self.add_spreadsheet(title)
        created.sheets.clear()
        for index, spec in enumerate(body.get("sheets") or [{}]):
            name = spec.get("properties", {}).get("title") or f"Sheet{index + 1}"
            grid: list[list[str]] = []
            for data in spec.get("data", []):
                rows = [
                    [cell["userEnteredValue"]["stringValue"] for cell in row.get("values", [])]
                    for row in data.get("rowData", [])
                ]
                write(grid, data.get("startRow", 0), data.get("startColumn", 0), rows)
            created.sheets[name] = grid
        return JSONResponse(created.resource())

    # -- Drive ------------------------------------------------------------------------------

    async def _list_files(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        clauses = _drive_query(request.query_params.get("q", ""))
        if clauses is None:
            return google_error(400, "Invalid Value")
        found = [
            {
                "id": s.id,
                "name": s.title,
                "mimeType": SPREADSHEET_MIME,
                "modifiedTime": s.modified,
                "webViewLink": f"https://docs.google.com/spreadsheets/d/{s.id}/edit",
            }
            for s in sorted(self.spreadsheets.values(), key=lambda s: s.modified, reverse=True)
            if clauses.get("mimeType", SPREADSHEET_MIME) == SPREADSHEET_MIME
            and clauses.get("name", "").lower() in s.title.lower()
        ]
        return JSONResponse(_token_page(request, "files", found, "pageSize", 100))

    # -- Gmail ------------------------------------------------------------------------------

    def _decode_raw(self, raw: Any) -> bytes | Response:
        if not isinstance(raw, str) or not raw:
            return google_error(400, "Invalid value at 'message.raw': missing")
        try:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            return google_error(
                400, "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed"
            )

    async def _send(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        raw = self._decode_raw(body.get("raw"))
        if isinstance(raw, Response):
            return raw
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        if not any(parsed.get(name) for name in ("To", "Cc", "Bcc")):
            return google_error(400, "Recipient address required")
        thread_id = body.get("threadId")
        if thread_id is not None and all(m.thread_id != thread_id for m in self.mails.values()):
            return _not_found()
        sent = self._store(raw, ["SENT"], thread_id)
        return JSONResponse({"id": sent.id, "threadId": sent.thread_id, "labelIds": sent.labels})

    async def _create_draft(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        message = body.get("message")
        raw = self._decode_raw(message.get("raw") if isinstance(message, dict) else None)
        if isinstance(raw, Response):
            return raw
        stored = self._store(raw, ["DRAFT"], None)
        draft_id = f"r-{next(self._ids)}"
        self.drafts[draft_id] = stored.id
        return JSONResponse(
            {
                "id": draft_id,
                "message": {"id": stored.id, "threadId": stored.thread_id, "labelIds": ["DRAFT"]},
            }
        )

    async def _list_messages(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        terms = request.query_params.get("q", "").split()
        hidden = {"DRAFT"}
        if request.query_params.get("includeSpamTrash") != "true":
            hidden |= {"SPAM", "TRASH"}
        found = [
            {"id": m.id, "threadId": m.thread_id}
            for m in sorted(self.mails.values(), key=lambda m: -m.internal_date)
            if not hidden & set(m.labels) and all(_matches(m, term) for term in terms)
        ]
        page = _token_page(request, "messages", found, "maxResults", 100)
        if not page["messages"]:
            del page["messages"]
        return JSONResponse({**page, "resultSizeEstimate": len(found)})

    async def _get_message(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        mail_id = request.path_params["id"]
        if not re.fullmatch(r"[0-9a-f]{1,32}", mail_id):
            return google_error(400, "Invalid id value")
        found = self.mails.get(mail_id)
        if found is None:
            return _not_found()
        form = request.query_params.get("format", "full")
        wanted = request.query_params.getlist("metadataHeaders")
        return JSONResponse(found.resource(form, wanted))

    async def _profile(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {"emailAddress": ME, "messagesTotal": len(self.mails), "threadsTotal": 0}
        )


_DRIVE_CLAUSE = re.compile(
    r"\s*(?:mimeType\s*=\s*'(?P<mime>(?:\\.|[^'\\])*)'"
    r"|trashed\s*=\s*(?P<trashed>true|false)"
    r"|name\s+contains\s+'(?P<name>(?:\\.|[^'\\])*)')\s*(?P<rest>and\b|$)"
)


def _drive_query(q: str) -> dict[str, str] | None:
    """The clauses of a Drive `q` this emulator understands; None for anything else."""
    found: dict[str, str] = {}
    position = 0
    while position < len(q):
        match = _DRIVE_CLAUSE.match(q, position)
        if match is None:
            return None
        if match["mime"] is not None:
            found["mimeType"] = match["mime"]
        if match["name"] is not None:
            found["name"] = re.sub(r"\\(.)", r"\1", match["name"])
        position = match.end()
    return found


def _matches(mail: Mail, term: str) -> bool:
    name, _, wanted = term.partition(":")
    if wanted and name in ("from", "to", "subject"):
        return wanted.lower() in mail.searchable(name)
    if term == "is:unread":
        return "UNREAD" in mail.labels
    return term.lower() in (mail.searchable("subject") + " " + mail.text().lower())


def _token_page(
    request: Request, key: str, items: list[Any], size_param: str, default: int
) -> dict[str, Any]:
    size = int(request.query_params.get(size_param, str(default)))
    token = request.query_params.get("pageToken")
    start = int(base64.b64decode(token).decode()) if token else 0
    page: dict[str, Any] = {key: items[start : start + size]}
    if start + size < len(items):
        page["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
    return page
