"""The hosted approval page `/approve/{id}?token=…`: what it shows, how it decides, who it lets in.

A "browser" here is a plain client of the app without the API key: the page must need nothing
but its link.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2
import pytest

from test_gates_execute import (
    API_KEY,
    BASE_URL,
    ENFORCED,
    PASSWORD,
    Gates,
    error,
    gates_fixture,  # noqa: F401
    pending,
)
from test_gates_idempotency import expire
from treadle.clock import iso, utcnow
from treadle.engine.approval_links import PREFIX, ApprovalLinks

pytestmark = pytest.mark.anyio

CSRF_FIELD = re.compile(r'name=csrf value="([^"]+)"')


@asynccontextmanager
async def browser(gates: Gates) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=gates.transport, base_url=BASE_URL) as client:
        yield client


def page_path(approval: dict[str, Any]) -> str:
    url = urlsplit(approval["approvalUrl"])
    assert f"{url.scheme}://{url.netloc}" == BASE_URL
    return f"{url.path}?{url.query}"


def token_of(approval: dict[str, Any]) -> str:
    return str(approval["approvalUrl"].split("?token=", 1)[1])


async def ask(gates: Gates, **body: Any) -> dict[str, Any]:
    return pending(await gates.send({"to": "a@example.com"}, **body))


async def opened(client: httpx2.AsyncClient, approval: dict[str, Any]) -> str:
    """Open the page; the CSRF value of its form (its cookie is now in the client)."""
    response = await client.get(page_path(approval))
    assert response.status_code == 200, response.text
    found = CSRF_FIELD.search(response.text)
    assert found is not None
    return found.group(1)


def form(approval: dict[str, Any], csrf: str, decision: str = "approve", **extra: str) -> Any:
    return {"token": token_of(approval), "csrf": csrf, "decision": decision, **extra}


def assert_protected(response: httpx2.Response) -> None:
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["content-type"].startswith("text/html")


def refused(response: httpx2.Response, status: int = 403) -> None:
    assert response.status_code == status, response.text
    assert_protected(response)
    assert "<form" not in response.text


# -- what the page shows ------------------------------------------------------------------------


async def test_the_page_shows_the_call_with_secrets_and_enforced_values_redacted(
    gates: Gates,
) -> None:
    await gates.policy()
    partial = await gates.api.post(
        "/partials",
        {
            "workspaceId": gates.api.workspace_id,
            "integrationName": "outbox",
            "name": "House style",
            "values": {"replyTo": ENFORCED, "text": "Sent by the finance bot"},
            "enforcedKeys": ["replyTo"],
            "isDefault": True,
        },
    )
    assert partial.status_code == 201, partial.text
    approval = pending(
        await gates.send(
            {"to": "cfo@example.com", "password": PASSWORD, "apiKey": API_KEY, "replyTo": "me"},
            endUserId="customer-42",
        )
    )
    stored = await gates.approval(approval["id"])
    async with browser(gates) as client:
        response = await client.get(page_path(approval))
    assert response.status_code == 200, response.text
    assert_protected(response)
    page = html.unescape(response.text)
    for shown in (
        "default",  # the workspace, by name
        "outbox",
        "mailer",
        "send",
        "customer-42",
        "rest",
        stored["createdAt"],
        "cfo@example.com",
        "Sent by the finance bot",  # merged from the partial: the input as it would run
        "[redacted]",
    ):
        assert shown in page, shown
    for hidden in (PASSWORD, API_KEY, ENFORCED, '"me"'):
        assert hidden not in response.text
        assert hidden not in page


async def test_the_page_escapes_what_the_caller_sent(gates: Gates) -> None:
    await gates.policy()
    approval = pending(await gates.send({"to": "<script>alert(1)</script>", "text": '"><img>'}))
    async with browser(gates) as client:
        response = await client.get(page_path(approval))
    assert response.status_code == 200
    assert "<script>" not in response.text
    assert "<img>" not in response.text
    assert "&lt;script&gt;" in response.text


async def test_the_page_sets_a_strict_http_only_csrf_cookie(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        response = await client.get(page_path(approval))
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/approve" in cookie


# -- deciding on the page -----------------------------------------------------------------------


async def test_approving_on_the_page_lets_the_retry_run_once(gates: Gates) -> None:
    await gates.policy()
    approval = pending(await gates.send({"to": "a@example.com"}, idempotencyKey="order-9"))
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        response = await client.post(
            f"/approve/{approval['id']}", data=form(approval, csrf, reason="looks right")
        )
    assert response.status_code == 200, response.text
    assert_protected(response)
    assert "<form" not in response.text
    decided = await gates.approval(approval["id"])
    assert (decided["status"], decided["decidedBy"], decided["reason"]) == (
        "approved",
        "hosted_link",
        "looks right",
    )
    ran = await gates.send({"to": "a@example.com"}, idempotencyKey="order-9")
    assert ran.status_code == 200, ran.text
    assert gates.kit.runs == [{"to": "a@example.com"}]


async def test_rejecting_on_the_page_refuses_the_retry(gates: Gates) -> None:
    await gates.policy()
    approval = pending(await gates.send({"to": "a@example.com"}, idempotencyKey="order-9"))
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        response = await client.post(
            f"/approve/{approval['id']}", data=form(approval, csrf, "reject")
        )
    assert response.status_code == 200, response.text
    assert (await gates.approval(approval["id"]))["status"] == "rejected"
    again = await gates.send({"to": "a@example.com"}, idempotencyKey="order-9")
    error(again, 403, "APPROVAL_REJECTED")


async def test_hosted_link_only_approvals_are_decided_on_the_page(gates: Gates) -> None:
    await gates.policy(approvalAccessMode="hosted_link_only")
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        response = await client.post(f"/approve/{approval['id']}", data=form(approval, csrf))
    assert response.status_code == 200, response.text
    assert (await gates.approval(approval["id"]))["status"] == "approved"


async def test_a_decided_approval_no_longer_opens(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        first = await client.post(f"/approve/{approval['id']}", data=form(approval, csrf))
        assert first.status_code == 200
        refused(await client.get(page_path(approval)))
        again = await client.post(f"/approve/{approval['id']}", data=form(approval, csrf, "reject"))
        refused(again)
    assert (await gates.approval(approval["id"]))["status"] == "approved"


async def test_a_decision_by_api_closes_the_page(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        await gates.decide(approval["id"], "reject")
        refused(await client.post(f"/approve/{approval['id']}", data=form(approval, csrf)))
    assert (await gates.approval(approval["id"]))["status"] == "rejected"


@pytest.mark.parametrize("decision", ["", "maybe", None])
async def test_a_form_without_a_valid_decision_decides_nothing(
    gates: Gates, decision: str | None
) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        data = form(approval, csrf)
        if decision is None:
            del data["decision"]
        else:
            data["decision"] = decision
        response = await client.post(f"/approve/{approval['id']}", data=data)
    refused(response, 400)
    assert (await gates.approval(approval["id"]))["status"] == "pending"


async def test_an_oversized_form_is_refused(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        data = form(approval, csrf, reason="x" * 20_000)
        response = await client.post(f"/approve/{approval['id']}", data=data)
    assert response.status_code == 413
    assert (await gates.approval(approval["id"]))["status"] == "pending"


@pytest.mark.parametrize("declared", ["abc", "-1", "9" * 40])
async def test_a_garbage_content_length_is_no_crash(gates: Gates, declared: str) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        response = await client.post(
            f"/approve/{approval['id']}",
            content=urlencode(form(approval, csrf)),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "content-length": declared,
            },
        )
    # The declared length is ignored when it is not a length; a huge one is refused unread.
    too_large = declared.isdigit()
    assert response.status_code == (413 if too_large else 200)
    expected = "pending" if too_large else "approved"
    assert (await gates.approval(approval["id"]))["status"] == expected


# -- CSRF -----------------------------------------------------------------------------------


async def test_a_form_without_the_csrf_cookie_is_refused(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
    async with browser(gates) as cookieless:
        refused(await cookieless.post(f"/approve/{approval['id']}", data=form(approval, csrf)))
    assert (await gates.approval(approval["id"]))["status"] == "pending"


@pytest.mark.parametrize("sent", ["", "forged-value", "é-not-ascii", None])
async def test_a_form_whose_csrf_field_does_not_match_the_cookie_is_refused(
    gates: Gates, sent: str | None
) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        await opened(client, approval)
        data = form(approval, sent or "")
        if sent is None:
            del data["csrf"]
        refused(await client.post(f"/approve/{approval['id']}", data=data))
    assert (await gates.approval(approval["id"]))["status"] == "pending"


async def test_a_csrf_value_from_another_page_load_is_refused(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as attacker:
        stolen = await opened(attacker, approval)
    async with browser(gates) as victim:
        await opened(victim, approval)
        refused(await victim.post(f"/approve/{approval['id']}", data=form(approval, stolen)))
    assert (await gates.approval(approval["id"]))["status"] == "pending"


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://treadle.test.evil.example", "https://treadle.test"]
)
async def test_a_form_posted_from_a_foreign_origin_is_refused(gates: Gates, origin: str) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        response = await client.post(
            f"/approve/{approval['id']}", data=form(approval, csrf), headers={"Origin": origin}
        )
    refused(response)
    assert (await gates.approval(approval["id"]))["status"] == "pending"


@pytest.mark.parametrize("origin", [BASE_URL, "null"])
async def test_a_form_posted_from_the_page_itself_is_accepted(gates: Gates, origin: str) -> None:
    """Browsers send the page's origin, or "null" under `Referrer-Policy: no-referrer`."""
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        response = await client.post(
            f"/approve/{approval['id']}", data=form(approval, csrf), headers={"Origin": origin}
        )
    assert response.status_code == 200, response.text
    assert (await gates.approval(approval["id"]))["status"] == "approved"


async def test_behind_a_proxy_a_form_from_the_public_origin_is_accepted(gates: Gates) -> None:
    """With TLS ended at a proxy the app sees http://…, the browser posts from the public URL."""
    public = "https://approvals.example.com"
    gates.gateway.settings = dataclasses.replace(gates.gateway.settings, public_url=public)
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        response = await client.post(
            f"/approve/{approval['id']}", data=form(approval, csrf), headers={"Origin": public}
        )
    assert response.status_code == 200, response.text
    assert (await gates.approval(approval["id"]))["status"] == "approved"


# -- the token ------------------------------------------------------------------------------


async def test_a_token_opens_only_its_own_approval(gates: Gates) -> None:
    await gates.policy()
    first = await ask(gates)
    second = pending(await gates.send({"to": "b@example.com"}))
    async with browser(gates) as client:
        refused(await client.get(f"/approve/{second['id']}?token={token_of(first)}"))
        csrf = await opened(client, first)
        refused(await client.post(f"/approve/{second['id']}", data=form(first, csrf)))
    assert (await gates.approval(second["id"]))["status"] == "pending"


def _tampered(token: str) -> list[str]:
    payload, _, signature = token[len(PREFIX) :].partition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return [
        "",
        "apr_link_v1_",
        "apr_link_v1_e30.",
        f"{PREFIX}{payload}.{flipped}",
        f"{PREFIX}{payload}X.{signature}",
        f"{PREFIX}{payload}",
        f"apr_link_v2_{payload}.{signature}",
        f"{PREFIX}{payload}.{signature}é",
        token + "x" * 2000,
    ]


async def test_forged_and_tampered_tokens_are_refused(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        for bad in _tampered(token_of(approval)):
            refused(await client.get(f"/approve/{approval['id']}", params={"token": bad}))
            data = {**form(approval, csrf), "token": bad}
            refused(await client.post(f"/approve/{approval['id']}", data=data))
    assert (await gates.approval(approval["id"]))["status"] == "pending"


async def test_a_token_signed_with_another_key_is_refused(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    forged = ApprovalLinks(b"not the instance key" * 2).token(approval["id"], approval["expiresAt"])
    async with browser(gates) as client:
        refused(await client.get(f"/approve/{approval['id']}", params={"token": forged}))


async def test_the_link_stops_working_when_the_approval_times_out(gates: Gates) -> None:
    await gates.policy(timeoutSeconds=60)
    approval = await ask(gates)
    await expire(gates, approval["id"])
    async with browser(gates) as client:
        refused(await client.get(page_path(approval)))
    assert (await gates.approval(approval["id"]))["status"] == "expired"


def test_a_token_expires_with_its_approval() -> None:
    links = ApprovalLinks(b"k" * 32)
    expires = utcnow() + timedelta(minutes=5)
    token = links.token("apr_1", iso(expires))
    assert links.verify(token, "apr_1")
    assert links.verify(token, "apr_1", now=expires - timedelta(seconds=1))
    assert not links.verify(token, "apr_1", now=expires)
    assert not links.verify(token, "apr_2")


async def test_a_policy_switched_to_dashboard_only_stops_its_links(gates: Gates) -> None:
    policy = (await gates.policy())["policy"]
    approval = await ask(gates)
    async with browser(gates) as client:
        csrf = await opened(client, approval)
        await gates.api.patch(
            f"/approval-policies/{policy['id']}", {"approvalAccessMode": "dashboard_only"}
        )
        refused(await client.get(page_path(approval)))
        refused(await client.post(f"/approve/{approval['id']}", data=form(approval, csrf)))
    assert (await gates.approval(approval["id"]))["status"] == "pending"


async def test_an_unknown_approval_with_a_valid_looking_link_is_refused(gates: Gates) -> None:
    await gates.policy()
    approval = await ask(gates)
    async with browser(gates) as client:
        response = await client.get(
            "/approve/apr_00000000000000000000000000000000", params={"token": token_of(approval)}
        )
    refused(response)
