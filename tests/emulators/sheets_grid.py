"""Sheets' A1 notation and a grid of displayed values, for the Google emulator."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ROWS, COLUMNS = 1000, 26

_SHEET_REF = re.compile(r"^(?:'((?:[^']|'')+)'|([^'!]+))(?:!(.+))?$")
_CELL = re.compile(r"^([A-Z]+)([0-9]+)$")
_ROWS = re.compile(r"^([0-9]+):([0-9]+)$")


def _column_index(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1


def letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def display_name(sheet: str) -> str:
    return sheet if re.fullmatch(r"[A-Za-z0-9_]+", sheet) else "'" + sheet.replace("'", "''") + "'"


@dataclass(frozen=True)
class Area:
    """Inclusive 0-based bounds on one sheet."""

    sheet: str
    top: int
    left: int
    bottom: int
    right: int

    def a1(self) -> str:
        start = f"{letters(self.left)}{self.top + 1}"
        end = f"{letters(self.right)}{self.bottom + 1}"
        return f"{display_name(self.sheet)}!{start}" + ("" if start == end else f":{end}")


def parse_area(text: str) -> Area | None:
    match = _SHEET_REF.match(text)
    if match is None:
        return None
    sheet = match[1].replace("''", "'") if match[1] is not None else match[2]
    cells = match[3]
    if cells is None:
        return Area(sheet, 0, 0, ROWS - 1, COLUMNS - 1)
    if rows := _ROWS.match(cells):
        return Area(sheet, int(rows[1]) - 1, 0, int(rows[2]) - 1, COLUMNS - 1)
    corners = [match for part in cells.split(":") if (match := _CELL.match(part))]
    if len(corners) != len(cells.split(":")) or not 1 <= len(corners) <= 2:
        return None
    first, last = corners[0], corners[-1]
    if "0" in (first[2], last[2]):
        return None
    return Area(
        sheet, int(first[2]) - 1, _column_index(first[1]), int(last[2]) - 1, _column_index(last[1])
    )


def shown(value: Any) -> str:
    """A written value as Sheets displays it (no formula evaluation here)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


@dataclass
class Spreadsheet:
    id: str
    title: str
    # Sheet name -> rows of displayed cell values.
    sheets: dict[str, list[list[str]]] = field(default_factory=dict)
    modified: str = "2025-02-01T12:00:00.000Z"

    def grid(self, name: str) -> list[list[str]]:
        return self.sheets[name]

    def resource(self) -> dict[str, Any]:
        return {
            "spreadsheetId": self.id,
            "properties": {"title": self.title, "locale": "en_US", "timeZone": "Etc/GMT"},
            "sheets": [
                {
                    "properties": {
                        "sheetId": index,
                        "title": name,
                        "index": index,
                        "sheetType": "GRID",
                        "gridProperties": {"rowCount": ROWS, "columnCount": COLUMNS},
                    }
                }
                for index, name in enumerate(self.sheets)
            ],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{self.id}/edit",
        }


def write(grid: list[list[str]], top: int, left: int, rows: list[list[Any]]) -> None:
    for r, row in enumerate(rows):
        while len(grid) <= top + r:
            grid.append([])
        target = grid[top + r]
        for c, value in enumerate(row):
            while len(target) <= left + c:
                target.append("")
            target[left + c] = shown(value)


def read(grid: list[list[str]], area: Area) -> list[list[str]]:
    rows = [
        list(grid[r][area.left : area.right + 1]) if r < len(grid) else []
        for r in range(area.top, area.bottom + 1)
    ]
    for row in rows:
        while row and row[-1] == "":
            row.pop()
    while rows and not rows[-1]:
        rows.pop()
    return rows


def last_row(grid: list[list[str]]) -> int:
    return max((i for i, row in enumerate(grid) if any(row)), default=-1)
