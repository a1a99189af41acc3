"""The Google Sheets integration end to end, over REST execute and MCP, against the Google
emulator (Sheets and Drive behind one base URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from emulators.google import GoogleEmulator, Spreadsheet
from emulators.harness import FACES, Stage, Tools, assert_well_described, open_stage
from treadle.catalog.builtin.google_sheets import integration
from treadle.catalog.providers import retry

pytestmark = pytest.mark.anyio

TOKEN = "ya29.s3cr3tGoogleSheetsAccessT0ken"
LEADS = [
    ["Name", "Email", "Source", "Date"],
    ["Ann Lee", "ann@example.com", "Ads", "2025-01-05"],
    ["Bo Chan", "bo@example.com", "Website form", "2025-01-09", "", "vip"],
    ["Cy Diaz", "cy@example.com", "ads", "2025-01-12"],
]


@pytest.fixture(scope="module")
async def stage(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stage[GoogleEmulator]]:
    data_dir = tmp_path_factory.mktemp("sheets")
    async with open_stage(
        data_dir, "google-sheets", TOKEN, lambda: GoogleEmulator(TOKEN)
    ) as opened:
        yield opened


@pytest.fixture
def google(stage: Stage[GoogleEmulator]) -> GoogleEmulator:
    return stage.fresh()


@pytest.fixture
def crm(google: GoogleEmulator) -> Spreadsheet:
    return google.add_spreadsheet("CRM", Leads=[list(row) for row in LEADS], Empty=[])


@pytest.fixture(params=FACES)
async def tools(
    request: pytest.FixtureRequest, stage: Stage[GoogleEmulator], google: GoogleEmulator
) -> AsyncIterator[Tools]:
    async with stage.tools(request.param) as opened:
        yield opened


def _target(sheet: Spreadsheet, name: str = "Leads", **extra: Any) -> dict[str, Any]:
    return {"spreadsheet_id": sheet.id, "sheet_name": name, **extra}


async def test_append_row_maps_values_to_columns_by_header(
    tools: Tools, google: GoogleEmulator, crm: Spreadsheet
) -> None:
    answer = await tools.call(
        "append_row",
        _target(crm, values={"Name": "Jane Smith", "email": "jane@example.com", "Date": 45000}),
    )

    assert answer.output() == {
        "spreadsheetId": crm.id,
        "updatedRange": "Leads!A5:D5",
        "updatedRows": 1,
        "updatedColumns": 4,
        "updatedCells": 4,
    }
    assert crm.sheets["Leads"][4] == ["Jane Smith", "jane@example.com", "", "45000"]
    [append] = google.recorder.calls(":append", "POST")
    assert append.param("valueInputOption") == "USER_ENTERED"
    assert append.param("insertDataOption") == "INSERT_ROWS"
    assert append.headers["authorization"] == f"Bearer {TOKEN}"


async def test_append_row_quotes_sheet_names_in_ranges(
    tools: Tools, google: GoogleEmulator
) -> None:
    sheet = google.add_spreadsheet("Odd", **{"Q1 'Plan'": [["Item", "Owner"]]})

    answer = await tools.call(
        "append_row", _target(sheet, "Q1 'Plan'", values={"Owner": "Ann", "Item": "Budget"})
    )

    assert answer.output()["updatedRange"] == "'Q1 ''Plan'''!A2:B2"
    assert sheet.sheets["Q1 'Plan'"][1] == ["Budget", "Ann"]


async def test_append_row_refuses_a_column_the_sheet_does_not_have(
    tools: Tools, google: GoogleEmulator, crm: Spreadsheet
) -> None:
    answer = await tools.call("append_row", _target(crm, values={"Phone": "555"}))

    assert (answer.kind, answer.error) == ("refused", "VALIDATION_ERROR")
    assert answer.body["field"] == "values.Phone"
    assert not google.recorder.calls(":append")


async def test_append_row_needs_a_header_row(tools: Tools, crm: Spreadsheet) -> None:
    answer = await tools.call("append_row", _target(crm, "Empty", values={"Name": "x"}))

    assert (answer.kind, answer.error) == ("refused", "ACTION_FAILED")
    assert answer.body["reason"] == "no_header_row"


async def test_a_missing_sheet_is_googles_invalid_argument(tools: Tools, crm: Spreadsheet) -> None:
    answer = await tools.call("append_row", _target(crm, "Nope", values={"Name": "x"}))

    assert (answer.kind, answer.error) == ("upstream", "invalid_argument")
    assert answer.body["detail"]["httpStatus"] == 400


async def test_read_rows_keys_cells_by_header_and_continues(tools: Tools, crm: Spreadsheet) -> None:
    first = (await tools.call("read_rows", _target(crm, limit=2))).output()
    rest = (await tools.call("read_rows", _target(crm, start_row=first["nextRow"]))).output()

    assert first["headers"] == LEADS[0]
    assert first["rows"] == [
        {"rowNumber": 2, "values": dict(zip(LEADS[0], LEADS[1], strict=True))},
        {
            "rowNumber": 3,
            "values": {**dict(zip(LEADS[0], LEADS[2][:4], strict=True)), "E": "", "F": "vip"},
        },
    ]
    assert first["nextRow"] == 4
    assert [row["rowNumber"] for row in rest["rows"]] == [4]
    assert rest["nextRow"] is None


async def test_find_rows_matches_a_column_ignoring_case(tools: Tools, crm: Spreadsheet) -> None:
    exact = (await tools.call("find_rows", _target(crm, column="Source", value="ADS"))).output()
    partial = (
        await tools.call("find_rows", _target(crm, column="email", value="bo@", match="contains"))
    ).output()

    assert [row["rowNumber"] for row in exact["rows"]] == [2, 4]
    assert exact["total"] == 2
    assert [row["values"]["Name"] for row in partial["rows"]] == ["Bo Chan"]


async def test_find_rows_refuses_an_unknown_column(tools: Tools, crm: Spreadsheet) -> None:
    answer = await tools.call("find_rows", _target(crm, column="Phone", value="1"))

    assert (answer.kind, answer.error) == ("refused", "VALIDATION_ERROR")
    assert answer.body["field"] == "column.Phone"


async def test_update_row_overwrites_only_the_named_cells(
    tools: Tools, google: GoogleEmulator, crm: Spreadsheet
) -> None:
    answer = await tools.call(
        "update_row", _target(crm, row_number=3, values={"Email": "bo@new.example", "Date": None})
    )

    output = answer.output()
    assert output["totalUpdatedCells"] == 2
    assert [r["updatedRange"] for r in output["responses"]] == ["Leads!B3", "Leads!D3"]
    assert crm.sheets["Leads"][2][:4] == ["Bo Chan", "bo@new.example", "Website form", ""]
    [batch] = google.recorder.calls("/values:batchUpdate", "POST")
    assert batch.json()["valueInputOption"] == "USER_ENTERED"


async def test_list_spreadsheets_asks_drive_for_spreadsheets_and_pages(
    tools: Tools, google: GoogleEmulator
) -> None:
    for title in ("Budget 2025", "O'Brien leads", "Roadmap"):
        google.add_spreadsheet(title)

    first = (await tools.call("list_spreadsheets", {"limit": 2})).output()
    rest = (await tools.call("list_spreadsheets", {"page_token": first["nextPageToken"]})).output()
    named = (await tools.call("list_spreadsheets", {"name_contains": "o'brien"})).output()

    assert [f["name"] for f in first["files"]] == ["Roadmap", "O'Brien leads"]
    assert [f["name"] for f in rest["files"]] == ["Budget 2025"]
    assert rest["nextPageToken"] is None
    assert [f["name"] for f in named["files"]] == ["O'Brien leads"]
    query = google.recorder.calls("/drive/v3/files")[-1].param("q")
    assert query == (
        "mimeType='application/vnd.google-apps.spreadsheet' and trashed=false "
        "and name contains 'o\\'brien'"
    )


async def test_list_sheets_lists_the_tabs(tools: Tools, crm: Spreadsheet) -> None:
    output = (await tools.call("list_sheets", {"spreadsheet_id": crm.id})).output()

    assert [s["properties"]["title"] for s in output["sheets"]] == ["Leads", "Empty"]


async def test_create_spreadsheet_with_headers_is_ready_for_append_row(
    tools: Tools, google: GoogleEmulator
) -> None:
    created = await tools.call(
        "create_spreadsheet", {"title": "Signups", "sheet_name": "People", "headers": ["Who"]}
    )
    output = created.output()
    appended = await tools.call(
        "append_row",
        {"spreadsheet_id": output["spreadsheetId"], "sheet_name": "People", "values": {"Who": "A"}},
    )

    assert output["spreadsheetUrl"].endswith(f"/d/{output['spreadsheetId']}/edit")
    assert appended.output()["updatedRange"] == "People!A2"
    assert google.spreadsheets[output["spreadsheetId"]].sheets["People"] == [["Who"], ["A"]]


async def test_a_missing_spreadsheet_is_an_upstream_not_found(tools: Tools) -> None:
    answer = await tools.call("list_sheets", {"spreadsheet_id": "1NoSuchSpreadsheet"})

    assert (answer.kind, answer.error) == ("upstream", "not_found")


async def test_refused_credentials_ask_to_reauthenticate(
    tools: Tools, google: GoogleEmulator, crm: Spreadsheet
) -> None:
    google.token = "ya29.expired"

    answer = await tools.call("read_rows", _target(crm))

    assert (answer.kind, answer.error) == ("refused", "CONNECTION_ERROR")
    if answer.status is not None:
        assert answer.status == 400


async def test_a_quota_error_is_retried_after_retry_after(
    tools: Tools, google: GoogleEmulator, crm: Spreadsheet
) -> None:
    google.recorder.fail(
        ":append",
        429,
        {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}},
        headers={"Retry-After": "0"},
        times=2,
    )

    answer = await tools.call("append_row", _target(crm, values={"Name": "Dee"}))

    assert answer.output()["updatedRows"] == 1
    assert len(google.recorder.calls(":append")) == 3
    assert len(crm.sheets["Leads"]) == 5


async def test_drives_rate_limit_reason_is_retried_and_then_reported(
    tools: Tools, google: GoogleEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Drive names no wait: the budget's fallback applies.
    monkeypatch.setattr(retry, "RETRY_BUDGET", retry.RetryBudget(fallback_seconds=0))
    limited = {
        "error": {
            "code": 403,
            "message": "User Rate Limit Exceeded",
            "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded"}],
        }
    }
    google.recorder.fail("/drive/v3/files", 403, limited, times=10)

    answer = await tools.call("list_spreadsheets", {})

    assert (answer.kind, answer.error) == ("upstream", "rate_limited")
    assert answer.body["detail"]["retryAfter"] >= 1
    assert len(google.recorder.calls("/drive/v3/files")) == 1 + retry.RETRY_BUDGET.max_retries


async def test_a_permission_error_is_not_retried(
    tools: Tools, google: GoogleEmulator, crm: Spreadsheet
) -> None:
    google.recorder.fail(
        "/values/'Leads'!1:1",
        403,
        {
            "error": {
                "code": 403,
                "message": "The caller does not have permission",
                "status": "PERMISSION_DENIED",
            }
        },
    )

    answer = await tools.call("read_rows", _target(crm))

    assert (answer.kind, answer.error) == ("upstream", "permission_denied")
    assert len(google.recorder.seen) == 1


async def test_a_server_error_is_an_upstream_error(
    tools: Tools, google: GoogleEmulator, crm: Spreadsheet
) -> None:
    google.recorder.fail(
        ":batchUpdate",
        503,
        {"error": {"code": 503, "message": "The service is unavailable.", "status": "UNAVAILABLE"}},
    )

    answer = await tools.call("update_row", _target(crm, row_number=2, values={"Name": "x"}))

    assert (answer.kind, answer.error) == ("upstream", "server_error")
    assert answer.body["detail"] == {"message": "The service is unavailable.", "httpStatus": 503}


def test_every_action_is_closed_described_and_honestly_annotated() -> None:
    assert_well_described(
        integration,
        read_only={"read_rows", "find_rows", "list_spreadsheets", "list_sheets"},
        destructive={"update_row"},
    )
    append = integration.action("append_row")
    assert append is not None
    sheet = append.input_schema["properties"]["sheet_name"]["x-treadle-options"]
    assert sheet == {
        "action": "list_sheets",
        "itemsField": "sheets",
        "valueField": "properties.title",
        "labelField": "properties.title",
        "dependsOn": ["spreadsheet_id"],
    }
