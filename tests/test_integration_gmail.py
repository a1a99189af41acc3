"""The Gmail integration end to end, over REST execute and MCP, against the Google emulator."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest

from emulators.google import ME, GoogleEmulator, Mail
from emulators.harness import FACES, Stage, Tools, assert_well_described, open_stage
from treadle.catalog.builtin.gmail import integration

pytestmark = pytest.mark.anyio

TOKEN = "ya29.s3cr3tGmailAccessT0ken"
PDF = b"%PDF-1.4 not really a pdf"


@pytest.fixture(scope="module")
async def stage(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stage[GoogleEmulator]]:
    data_dir = tmp_path_factory.mktemp("gmail")
    async with open_stage(
        data_dir, "gmail", TOKEN, lambda: GoogleEmulator(TOKEN), api_path="/gmail/v1/users/me"
    ) as opened:
        yield opened


@pytest.fixture
def google(stage: Stage[GoogleEmulator]) -> GoogleEmulator:
    return stage.fresh()


@pytest.fixture
def invoice(google: GoogleEmulator) -> Mail:
    message = EmailMessage()
    message["From"] = "Alice Archer <alice@example.com>"
    message["To"] = ME
    message["Subject"] = "Café invoice"
    message["Message-ID"] = "<inv-1@example.com>"
    message.set_content("Please find the invoice attached.\n")
    message.add_alternative("<p>Please find the invoice attached.</p>", subtype="html")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    return google.receive(message)


@pytest.fixture
def lunch(google: GoogleEmulator) -> Mail:
    message = EmailMessage()
    message["From"] = "Bob Baker <bob@example.com>"
    message["To"] = f"{ME}, Dan <dan@example.com>"
    message["Cc"] = "carol@example.com"
    message["Subject"] = "Lunch?"
    message["Message-ID"] = "<lunch-1@example.com>"
    message["References"] = "<older@example.com>"
    message.set_content("Noon at the usual place?\n")
    return google.receive(message)


@pytest.fixture(params=FACES)
async def tools(
    request: pytest.FixtureRequest, stage: Stage[GoogleEmulator], google: GoogleEmulator
) -> AsyncIterator[Tools]:
    async with stage.tools(request.param) as opened:
        yield opened


def _sent(google: GoogleEmulator, message_id: str) -> Any:
    return email.message_from_bytes(google.mails[message_id].raw, policy=email.policy.default)


async def test_send_email_sends_an_rfc_2822_message(tools: Tools, google: GoogleEmulator) -> None:
    answer = await tools.call(
        "send_email",
        {
            "to": ["Jane Smith <jane@example.com>"],
            "cc": ["cy@example.com"],
            "bcc": ["audit@example.com"],
            "subject": "Q1 report — final",
            "body": "Numbers attached.",
            "html_body": "<b>Numbers</b> attached.",
        },
    )

    output = answer.output()
    assert output["labelIds"] == ["SENT"]
    assert output["threadId"] == output["id"]
    sent = _sent(google, output["id"])
    assert sent["To"] == "Jane Smith <jane@example.com>"
    assert (sent["Cc"], sent["Bcc"]) == ("cy@example.com", "audit@example.com")
    assert sent["Subject"] == "Q1 report — final"
    assert sent.get_body(("plain",)).get_content().strip() == "Numbers attached."
    assert "<b>Numbers</b>" in sent.get_body(("html",)).get_content()
    [seen] = google.recorder.calls("/messages/send")
    assert set(seen.json()) == {"raw"}
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"


async def test_send_email_refuses_a_header_with_a_line_break(tools: Tools) -> None:
    answer = await tools.call(
        "send_email",
        {"to": ["jane@example.com"], "subject": "Hi\r\nBcc: all@example.com", "body": "x"},
    )

    assert (answer.kind, answer.error) == ("refused", "VALIDATION_ERROR")
    assert answer.body["field"] == "subject"


async def test_search_messages_adds_summaries_and_pages(
    tools: Tools, google: GoogleEmulator, invoice: Mail, lunch: Mail
) -> None:
    first = (await tools.call("search_messages", {"limit": 1})).output()
    second = (
        await tools.call("search_messages", {"limit": 1, "page_token": first["nextPageToken"]})
    ).output()
    found = (await tools.call("search_messages", {"query": "from:alice"})).output()

    assert [m["subject"] for m in first["messages"]] == ["Lunch?"]
    assert first["resultSizeEstimate"] == 2
    assert [m["id"] for m in second["messages"]] == [invoice.id]
    assert second["nextPageToken"] is None
    [summary] = found["messages"]
    assert summary["from"] == "Alice Archer <alice@example.com>"
    assert summary["subject"] == "Café invoice"
    assert summary["snippet"].startswith("Please find")
    metadata = google.recorder.calls(f"/messages/{invoice.id}")[-1]
    assert metadata.param("format") == "metadata"


async def test_search_messages_can_skip_the_summaries(
    tools: Tools, google: GoogleEmulator, invoice: Mail, lunch: Mail
) -> None:
    output = (await tools.call("search_messages", {"include_details": False})).output()

    assert output["messages"] == [
        {"id": lunch.id, "threadId": lunch.thread_id},
        {"id": invoice.id, "threadId": invoice.thread_id},
    ]
    assert len(google.recorder.seen) == 1


async def test_get_message_decodes_headers_bodies_and_lists_attachments(
    tools: Tools, invoice: Mail
) -> None:
    output = (await tools.call("get_message", {"message_id": invoice.id})).output()

    assert output["headers"]["Subject"] == "Café invoice"
    assert output["headers"]["From"] == "Alice Archer <alice@example.com>"
    assert output["headers"]["Message-ID"] == "<inv-1@example.com>"
    assert output["textBody"].strip() == "Please find the invoice attached."
    assert output["htmlBody"].strip() == "<p>Please find the invoice attached.</p>"
    assert output["truncated"] is False
    [attachment] = output["attachments"]
    assert (attachment["filename"], attachment["mimeType"]) == ("invoice.pdf", "application/pdf")
    assert attachment["size"] == len(PDF)


async def test_a_missing_message_is_an_upstream_not_found(tools: Tools) -> None:
    answer = await tools.call("get_message", {"message_id": "18d0ffffffffffff"})

    assert (answer.kind, answer.error) == ("upstream", "not_found")


async def test_create_draft_saves_without_sending(tools: Tools, google: GoogleEmulator) -> None:
    answer = await tools.call(
        "create_draft", {"to": ["jane@example.com"], "subject": "Later", "body": "Draft text"}
    )

    output = answer.output()
    assert output["id"] in google.drafts
    assert output["message"]["labelIds"] == ["DRAFT"]
    assert _sent(google, output["message"]["id"])["Subject"] == "Later"
    listed = (await tools.call("search_messages", {"include_details": False})).output()
    assert listed["messages"] == []


async def test_reply_to_message_answers_the_sender_in_the_thread(
    tools: Tools, google: GoogleEmulator, lunch: Mail
) -> None:
    answer = await tools.call("reply_to_message", {"message_id": lunch.id, "body": "Yes!"})

    output = answer.output()
    assert output["threadId"] == lunch.thread_id
    reply = _sent(google, output["id"])
    assert reply["To"] == "Bob Baker <bob@example.com>"
    assert reply["Cc"] is None
    assert reply["Subject"] == "Re: Lunch?"
    assert reply["In-Reply-To"] == "<lunch-1@example.com>"
    assert reply["References"] == "<older@example.com> <lunch-1@example.com>"
    assert google.recorder.calls("/messages/send")[0].json()["threadId"] == lunch.thread_id


async def test_reply_all_copies_everyone_but_me(
    tools: Tools, google: GoogleEmulator, lunch: Mail
) -> None:
    answer = await tools.call(
        "reply_to_message", {"message_id": lunch.id, "body": "Yes!", "reply_all": True}
    )

    reply = _sent(google, answer.output()["id"])
    assert reply["To"] == "Bob Baker <bob@example.com>"
    assert reply["Cc"] == "Dan <dan@example.com>, carol@example.com"


async def test_an_invalid_message_is_googles_invalid_argument(
    tools: Tools, google: GoogleEmulator
) -> None:
    google.recorder.fail(
        "/messages/send",
        400,
        {"error": {"code": 400, "message": "Invalid To header", "status": "INVALID_ARGUMENT"}},
    )

    answer = await tools.call("send_email", {"to": ["x@y"], "subject": "s", "body": "b"})

    assert (answer.kind, answer.error) == ("upstream", "invalid_argument")
    assert answer.body["detail"]["message"] == "Invalid To header"


async def test_an_expired_token_asks_to_reauthenticate(
    tools: Tools, google: GoogleEmulator, invoice: Mail
) -> None:
    google.token = "ya29.other"

    answer = await tools.call("get_message", {"message_id": invoice.id})

    assert (answer.kind, answer.error) == ("refused", "CONNECTION_ERROR")
    if answer.status is not None:
        assert answer.status == 400


async def test_a_rate_limited_send_is_retried_once_allowed(
    tools: Tools, google: GoogleEmulator
) -> None:
    google.recorder.fail(
        "/messages/send",
        429,
        {"error": {"code": 429, "message": "Too many", "status": "RESOURCE_EXHAUSTED"}},
        headers={"Retry-After": "0"},
    )

    answer = await tools.call("send_email", {"to": ["a@example.com"], "subject": "s", "body": "b"})

    assert answer.output()["labelIds"] == ["SENT"]
    assert len(google.recorder.calls("/messages/send")) == 2
    assert len(google.mails) == 1


async def test_a_long_rate_limit_is_reported_with_its_retry_after(
    tools: Tools, google: GoogleEmulator
) -> None:
    google.recorder.fail(
        "/messages",
        429,
        {"error": {"code": 429, "message": "Too many", "status": "RESOURCE_EXHAUSTED"}},
        headers={"Retry-After": "45"},
    )

    answer = await tools.call("search_messages", {})

    assert (answer.kind, answer.error) == ("upstream", "rate_limited")
    assert answer.body["detail"]["retryAfter"] == 45


async def test_a_failure_while_summarising_fails_the_search(
    tools: Tools, google: GoogleEmulator, invoice: Mail, lunch: Mail
) -> None:
    google.recorder.fail(f"/messages/{invoice.id}", 500, "<html>oops</html>")

    answer = await tools.call("search_messages", {})

    assert (answer.kind, answer.error) == ("upstream", "server_error")


def test_every_action_is_closed_described_and_honestly_annotated() -> None:
    assert_well_described(
        integration, read_only={"search_messages", "get_message"}, destructive=set()
    )
