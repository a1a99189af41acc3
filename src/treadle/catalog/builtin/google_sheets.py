"""Google Sheets: rows keyed by the header row; spreadsheets listed through Google Drive.

Rows are read and written as objects keyed by the sheet's first row (the execute API's
`append_row`), so callers never count columns. Values are written as if typed by a user
(`USER_ENTERED`: "2025-02-01" becomes a date, "=A1*2" a formula) and read as displayed.

Base URLs: Sheets lives at https://sheets.googleapis.com/v4/... and Drive at
https://www.googleapis.com/drive/v3/...; a connection's base URL override replaces both hosts,
keeping those paths (they do not collide), so one proxy or emulator serves the two.
"""

from __future__ import annotations

from typing import Any

from treadle.catalog.model import Action, ActionContext, AuthKind, Integration, JSONObject
from treadle.catalog.providers.annotations import CREATE, READ, UPDATE
from treadle.catalog.providers.google import google_provider
from treadle.catalog.providers.pagination import Page, collect, page_of
from treadle.catalog.providers.rest import RestClient, segment
from treadle.catalog.providers.schema import SETTINGS_SCHEMA, choice, object_schema
from treadle.errors import ActionRuntimeError, ValidationFailed

SHEETS = google_provider("Google Sheets", "https://sheets.googleapis.com")
DRIVE = google_provider("Google Drive", "https://www.googleapis.com")
SPREADSHEET_MIME_TYPE = "application/vnd.google-apps.spreadsheet"
MAX_ROWS = 1000
DRIVE_PAGE_SIZE = 1000


def _sheets(ctx: ActionContext) -> RestClient:
    return RestClient(ctx, SHEETS)


def _a1(sheet: str, cells: str = "") -> str:
    """An A1 range on `sheet`; the name is always quoted, which is valid for every name."""
    quoted = "'" + sheet.replace("'", "''") + "'"
    return f"{quoted}!{cells}" if cells else quoted


def _column(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _values_path(spreadsheet_id: str, a1: str = "") -> str:
    path = f"/v4/spreadsheets/{segment(spreadsheet_id)}/values"
    return f"{path}/{segment(a1)}" if a1 else path


async def _read(client: RestClient, spreadsheet_id: str, a1: str) -> list[list[Any]]:
    answer = await client.json_object("GET", _values_path(spreadsheet_id, a1))
    values = answer.get("values", [])
    return [row for row in values if isinstance(row, list)] if isinstance(values, list) else []


async def _headers(client: RestClient, data: JSONObject) -> list[str]:
    rows = await _read(client, data["spreadsheet_id"], _a1(data["sheet_name"], "1:1"))
    headers = [str(cell).strip() for cell in rows[0]] if rows else []
    if not any(headers):
        raise ActionRuntimeError(
            f"sheet '{data['sheet_name']}' has no header row: its first row names the columns",
            reason="no_header_row",
        )
    return headers


def _positions(headers: list[str], values: JSONObject, field: str) -> dict[int, Any]:
    """Column index for each key: the exact header first, else one differing only in case."""
    exact: dict[str, int] = {}
    folded: dict[str, int] = {}
    for position, header in enumerate(headers):
        if header:
            exact.setdefault(header, position)
            folded.setdefault(header.casefold(), position)
    found: dict[int, Any] = {}
    for key, value in values.items():
        name = key.strip()
        index = exact[name] if name in exact else folded.get(name.casefold())
        if index is None:
            known = ", ".join(h for h in headers if h)
            raise ValidationFailed(
                f"No column named '{name}'; the sheet's columns are: {known}",
                field=f"{field}.{key}",
            )
        if index in found:
            raise ValidationFailed(
                f"Two keys name the column '{headers[index]}'", field=f"{field}.{key}"
            )
        found[index] = "" if value is None else value
    return found


def _record(headers: list[str], row: list[Any], number: int) -> JSONObject:
    # Cells beyond the named columns are keyed by their column letter.
    values = {
        (headers[i] if i < len(headers) and headers[i] else _column(i)): cell
        for i, cell in enumerate(row)
    }
    return {"rowNumber": number, "values": values}


async def append_row(ctx: ActionContext, data: JSONObject) -> JSONObject:
    client = _sheets(ctx)
    headers = await _headers(client, data)
    cells = _positions(headers, data["values"], "values")
    row = [""] * (max(cells) + 1)
    for index, value in cells.items():
        row[index] = value
    path = _values_path(data["spreadsheet_id"], _a1(data["sheet_name"], "A1")) + ":append"
    answer = await client.json_object(
        "POST",
        path,
        params={"valueInputOption": "USER_ENTERED", "insertDataOption": "INSERT_ROWS"},
        body={"majorDimension": "ROWS", "values": [row]},
    )
    updates = answer.get("updates")
    return updates if isinstance(updates, dict) else {"spreadsheetId": data["spreadsheet_id"]}


async def read_rows(ctx: ActionContext, data: JSONObject) -> JSONObject:
    client = _sheets(ctx)
    headers = await _headers(client, data)
    start = data.get("start_row", 2)
    limit = data.get("limit", 100)
    a1 = _a1(data["sheet_name"], f"{start}:{start + limit - 1}")
    rows = await _read(client, data["spreadsheet_id"], a1)
    return {
        "spreadsheetId": data["spreadsheet_id"],
        "sheetName": data["sheet_name"],
        "headers": headers,
        "rows": [_record(headers, row, start + i) for i, row in enumerate(rows) if row],
        # Google leaves trailing empty rows out, so a short answer is the end of the data.
        "nextRow": start + limit if len(rows) == limit else None,
    }


def _displayed(value: str | float | bool) -> str:
    """A value as Sheets shows it by default: TRUE/FALSE, 5 rather than 5.0."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _matches(cell: Any, wanted: str, *, contains: bool, case_sensitive: bool) -> bool:
    text = str(cell)
    if not case_sensitive:
        text, wanted = text.casefold(), wanted.casefold()
    return wanted in text if contains else text.strip() == wanted.strip()


async def find_rows(ctx: ActionContext, data: JSONObject) -> JSONObject:
    client = _sheets(ctx)
    table = await _read(client, data["spreadsheet_id"], _a1(data["sheet_name"]))
    headers = [str(cell).strip() for cell in table[0]] if table else []
    index = next(iter(_positions(headers, {data["column"]: None}, "column")))
    wanted_text = _displayed(data["value"])
    contains = data.get("match", "equals") == "contains"
    case_sensitive = data.get("case_sensitive", False) is True
    found = [
        _record(headers, row, number)
        for number, row in enumerate(table[1:], start=2)
        if index < len(row)
        and _matches(row[index], wanted_text, contains=contains, case_sensitive=case_sensitive)
    ]
    limit = data.get("limit", 100)
    return {
        "spreadsheetId": data["spreadsheet_id"],
        "sheetName": data["sheet_name"],
        "headers": headers,
        "rows": found[:limit],
        "total": len(found),
    }


async def update_row(ctx: ActionContext, data: JSONObject) -> JSONObject:
    client = _sheets(ctx)
    headers = await _headers(client, data)
    cells = _positions(headers, data["values"], "values")
    number = data["row_number"]
    updates = [
        {"range": _a1(data["sheet_name"], f"{_column(i)}{number}"), "values": [[value]]}
        for i, value in sorted(cells.items())
    ]
    return await client.json_object(
        "POST",
        _values_path(data["spreadsheet_id"]) + ":batchUpdate",
        body={"valueInputOption": "USER_ENTERED", "data": updates},
    )


async def list_spreadsheets(ctx: ActionContext, data: JSONObject) -> JSONObject:
    client = RestClient(ctx, DRIVE)
    query = f"mimeType='{SPREADSHEET_MIME_TYPE}' and trashed=false"
    if "name_contains" in data:
        escaped = data["name_contains"].replace("\\", "\\\\").replace("'", "\\'")
        query += f" and name contains '{escaped}'"

    async def fetch(cursor: str | None, size: int) -> Page:
        answer = await client.json_object(
            "GET",
            "/drive/v3/files",
            params={
                "q": query,
                "pageSize": size,
                "pageToken": cursor,
                "orderBy": "modifiedTime desc",
                "fields": "nextPageToken,files(id,name,modifiedTime,webViewLink)",
                "supportsAllDrives": True,
                "includeItemsFromAllDrives": True,
            },
        )
        return page_of(answer.get("files"), answer.get("nextPageToken"))

    page = await collect(
        fetch,
        limit=data.get("limit", 100),
        page_size=DRIVE_PAGE_SIZE,
        cursor=data.get("page_token"),
    )
    return {"files": page.items, "nextPageToken": page.next_cursor}


async def list_sheets(ctx: ActionContext, data: JSONObject) -> JSONObject:
    return await _sheets(ctx).json_object(
        "GET",
        f"/v4/spreadsheets/{segment(data['spreadsheet_id'])}",
        params={"fields": "spreadsheetId,properties.title,sheets.properties"},
    )


async def create_spreadsheet(ctx: ActionContext, data: JSONObject) -> JSONObject:
    sheet: JSONObject = {"properties": {"title": data.get("sheet_name", "Sheet1")}}
    if data.get("headers"):
        # Written in the same request, so there is never a spreadsheet without its headers.
        cells = [{"userEnteredValue": {"stringValue": name}} for name in data["headers"]]
        sheet["data"] = [{"startRow": 0, "startColumn": 0, "rowData": [{"values": cells}]}]
    body = {"properties": {"title": data["title"]}, "sheets": [sheet]}
    return await _sheets(ctx).json_object("POST", "/v4/spreadsheets", body=body)


_SPREADSHEET = choice(
    "ID of the spreadsheet, as in docs.google.com/spreadsheets/d/<ID>/edit.",
    action="list_spreadsheets",
    items="files",
    value="id",
    label="name",
    pattern="^[A-Za-z0-9_-]{1,200}$",
)
_SHEET = choice(
    "Name of the sheet (tab) inside the spreadsheet, such as Sheet1.",
    action="list_sheets",
    items="sheets",
    value="properties.title",
    label="properties.title",
    depends_on=["spreadsheet_id"],
    maxLength=100,
)
_CELL = {"type": ["string", "number", "boolean", "null"]}
_ROW_VALUES = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 500,
    "propertyNames": {"minLength": 1, "maxLength": 500},
    "additionalProperties": _CELL,
}
_ROW_NUMBER = {"type": "integer", "minimum": 2, "maximum": 10_000_000}
_LIMIT = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_ROWS,
    "default": 100,
    "description": f"Most rows to return (at most {MAX_ROWS}).",
}
_TARGET = {"spreadsheet_id": _SPREADSHEET, "sheet_name": _SHEET}

_APPEND = object_schema(
    {
        **_TARGET,
        "values": {
            **_ROW_VALUES,
            "description": (
                'The new row as column header -> value, such as {"Name": "Jane", '
                '"Email": "jane@example.com"}. Columns left out stay empty; a header '
                "the sheet does not have is refused."
            ),
        },
    },
    ["spreadsheet_id", "sheet_name", "values"],
)
_READ_ROWS = object_schema(
    {
        **_TARGET,
        "start_row": {
            **_ROW_NUMBER,
            "default": 2,
            "description": "Sheet row number to start at; row 1 holds the headers.",
        },
        "limit": _LIMIT,
    },
    ["spreadsheet_id", "sheet_name"],
)
_FIND_ROWS = object_schema(
    {
        **_TARGET,
        "column": {
            "type": "string",
            "minLength": 1,
            "maxLength": 500,
            "description": "Header of the column to search.",
        },
        "value": {
            "type": ["string", "number", "boolean"],
            "description": "Value to look for, compared with the cell as displayed.",
        },
        "match": {
            "enum": ["equals", "contains"],
            "default": "equals",
            "description": "Whole-cell match, or the cell contains the value.",
        },
        "case_sensitive": {
            "type": "boolean",
            "default": False,
            "description": "Tell upper from lower case (by default they match).",
        },
        "limit": _LIMIT,
    },
    ["spreadsheet_id", "sheet_name", "column", "value"],
)
_UPDATE_ROW = object_schema(
    {
        **_TARGET,
        "row_number": {
            **_ROW_NUMBER,
            "description": "Sheet row number to update, as returned in `rowNumber`.",
        },
        "values": {
            **_ROW_VALUES,
            "description": (
                "Cells to overwrite as column header -> value; other cells are kept. "
                "null empties a cell."
            ),
        },
    },
    ["spreadsheet_id", "sheet_name", "row_number", "values"],
)
_LIST_SPREADSHEETS = object_schema(
    {
        "name_contains": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "Only spreadsheets whose name contains this text.",
        },
        "limit": _LIMIT,
        "page_token": {
            "type": "string",
            "maxLength": 2000,
            "description": "Continue a previous listing with its `nextPageToken`.",
        },
    }
)
_LIST_SHEETS = object_schema({"spreadsheet_id": _SPREADSHEET}, ["spreadsheet_id"])
_CREATE = object_schema(
    {
        "title": {
            "type": "string",
            "minLength": 1,
            "maxLength": 500,
            "description": "Name of the new spreadsheet.",
        },
        "sheet_name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "default": "Sheet1",
            "description": "Name of its first sheet.",
        },
        "headers": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 500},
            "maxItems": 500,
            "uniqueItems": True,
            "description": "Column headers written to row 1, ready for append_row.",
        },
    },
    ["title"],
)

_ROWS_OUT = (
    "`rows`, each `{rowNumber, values}` with values keyed by column header (cells without "
    "a header by column letter)"
)

integration = Integration(
    name="google-sheets",
    display_name="Google Sheets",
    description=(
        "Append, read, find and update rows of Google Sheets by column header; list and "
        "create spreadsheets."
    ),
    auth_kind=AuthKind.OAUTH2,
    settings_schema=SETTINGS_SCHEMA,
    actions=(
        Action(
            name="append_row",
            display_name="Append row",
            description=(
                "Add a row after the last row of a sheet, values keyed by column header. "
                "Returns `spreadsheetId`, `updatedRange` (such as Leads!A15:D15) and "
                "`updatedRows`."
            ),
            input_schema=_APPEND,
            run=append_row,
            annotations=CREATE,
        ),
        Action(
            name="read_rows",
            display_name="Read rows",
            description=(
                f"Read consecutive rows of a sheet. Returns `headers`, {_ROWS_OUT}, and "
                "`nextRow` to continue from (null at the end)."
            ),
            input_schema=_READ_ROWS,
            run=read_rows,
            annotations=READ,
        ),
        Action(
            name="find_rows",
            display_name="Find rows",
            description=(
                f"Find the rows whose cell in one column matches a value. Returns {_ROWS_OUT}, "
                "and `total` matches."
            ),
            input_schema=_FIND_ROWS,
            run=find_rows,
            annotations=READ,
        ),
        Action(
            name="update_row",
            display_name="Update row",
            description=(
                "Overwrite some cells of one row, by column header. Returns Google's "
                "summary: `totalUpdatedCells` and the updated ranges."
            ),
            input_schema=_UPDATE_ROW,
            run=update_row,
            annotations=UPDATE,
        ),
        Action(
            name="list_spreadsheets",
            display_name="List spreadsheets",
            description=(
                "List spreadsheets in the user's Google Drive, most recently changed first: "
                "`files` (each with `id` and `name`) and `nextPageToken`."
            ),
            input_schema=_LIST_SPREADSHEETS,
            run=list_spreadsheets,
            annotations=READ,
        ),
        Action(
            name="list_sheets",
            display_name="List sheets",
            description=(
                "List the sheets (tabs) of a spreadsheet: `sheets`, each with `properties.title`."
            ),
            input_schema=_LIST_SHEETS,
            run=list_sheets,
            annotations=READ,
        ),
        Action(
            name="create_spreadsheet",
            display_name="Create spreadsheet",
            description=(
                "Create a spreadsheet, optionally with column headers in its first sheet. "
                "Returns `spreadsheetId`, `spreadsheetUrl` and its `sheets`."
            ),
            input_schema=_CREATE,
            run=create_spreadsheet,
            annotations=CREATE,
        ),
    ),
)
