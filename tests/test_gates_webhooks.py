"""Approval webhooks: signed POSTs on pending and on decision, retried, never blocking a call.

A real receiver (Starlette on tests/loopback.py's uvicorn) records what arrives. The gateway's
notifier is replaced by one with a short backoff, in a desk wired as `Gateway.open` wires it
(handed to the gateway and its executor), and its worker runs for the length of each test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from test_gates_execute import API_KEY, ENFORCED, PASSWORD, Gates, open_gates, pending
from test_gates_idempotency import expire
from treadle.engine.approval_links import ApprovalLinks
from treadle.engine.approvals import ApprovalDesk
from treadle.engine.webhooks import SIGNATURE_HEADER, WebhookNotifier
from treadle.settings import Settings
from treadle.vault import Vault

from loopback import serve

pytestmark = pytest.mark.anyio

BACKOFF = 0.01
SECRET_INPUT = {"to": "cfo@example.com", "password": PASSWORD, "apiKey": API_KEY}


@dataclass(frozen=True)
class Hook:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    url: str
    sink: MemoryObjectSendStream[Hook]
    received: MemoryObjectReceiveStream[Hook]
    answers: list[int] = field(default_factory=list)  # statuses to answer, then 200s
    release: anyio.Event = field(default_factory=anyio.Event)  # requests wait for it

    def __post_init__(self) -> None:
        self.release.set()

    async def next(self, seconds: float = 5) -> Hook:
        with anyio.fail_after(seconds):
            return await self.received.receive()

    def nothing_arrived(self) -> bool:
        return self.received.statistics().current_buffer_used == 0

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        status = self.answers.pop(0) if self.answers else 200
        await self.sink.send(Hook(dict(request.headers), body, status))
        await self.release.wait()
        return Response(status_code=status)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a loopback port, serving until the block ends."""
    sink, received = anyio.create_memory_object_stream[Hook](100)
    state = Receiver("", sink, received)
    async with serve(Starlette(routes=[Route("/hook", state.hook, methods=["POST"])])) as port:
        state.url = f"http://127.0.0.1:{port}/hook"
        try:
            yield state
        finally:
            state.release.set()


class Delivered(list[tuple[str, int]]):
    """The (event, final status) of every delivery the notifier ended, awaitable."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = anyio.Event()

    def record(self, event: str, status: int) -> None:
        """The notifier's `on_outcome`."""
        self.append((event, status))
        self._changed.set()
        self._changed = anyio.Event()

    async def at_least(self, count: int, seconds: float = 5) -> None:
        with anyio.fail_after(seconds):
            while len(self) < count:
                await self._changed.wait()


def rewire(gates: Gates, delivered: Delivered, *, allow_private: bool = True) -> WebhookNotifier:
    """A notifier with a short backoff, wired into the gateway as `Gateway.open` does."""
    gateway = gates.gateway
    notifier = WebhookNotifier(
        gateway.http,
        backoff_seconds=BACKOFF,
        allow_private_network=allow_private,
        on_outcome=delivered.record,
    )
    vault = Vault.open(gateway.settings.data_dir, gateway.settings.secret_key)
    desk = ApprovalDesk(
        gateway.store,
        ApprovalLinks(vault.derive("treadle approval links")),
        notifier,
        gateway.settings.public_url,
    )
    gateway.webhooks = notifier
    gateway.approvals = desk
    # The executor keeps everything else Gateway.open gave it; only its desk changes.
    gateway.executor._approvals = desk
    return notifier


@dataclass
class Hooks:
    gates: Gates
    receiver: Receiver
    notifier: WebhookNotifier
    delivered: Delivered
    secrets: dict[str, str] = field(default_factory=dict)  # policy ID → webhook secret

    async def policy(self, **fields: Any) -> dict[str, Any]:
        created = await self.gates.policy(notifyWebhookUrl=self.receiver.url, **fields)
        self.secrets[created["policy"]["id"]] = created["webhookSecret"]
        policy: dict[str, Any] = created["policy"]
        return policy


@asynccontextmanager
async def hooked(settings: Settings, *, allow_private: bool = True) -> AsyncIterator[Hooks]:
    async with open_gates(settings) as gates, receiver() as hooks_receiver:
        delivered = Delivered()
        notifier = rewire(gates, delivered, allow_private=allow_private)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            yield Hooks(gates, hooks_receiver, notifier, delivered)
            tg.cancel_scope.cancel()


@pytest.fixture
async def hooks(settings: Settings) -> AsyncIterator[Hooks]:
    async with hooked(settings) as opened:
        yield opened


def assert_signed(hook: Hook, secret: str) -> None:
    """`X-Treadle-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    header = hook.headers[SIGNATURE_HEADER.lower()]
    parts = dict(part.split("=", 1) for part in header.split(","))
    assert set(parts) == {"t", "v1"}
    assert abs(int(parts["t"]) - time.time()) < 300
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + hook.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    wrong = hmac.new(b"whsec_other", parts["t"].encode() + b"." + hook.body, hashlib.sha256)
    assert parts["v1"] != wrong.hexdigest()


def assert_no_secrets(hook: Hook) -> None:
    for hidden in (PASSWORD, API_KEY, ENFORCED):
        assert hidden.encode() not in hook.body


async def test_a_pending_approval_is_posted_signed_with_the_policy_secret(hooks: Hooks) -> None:
    policy = await hooks.policy()
    approval = pending(await hooks.gates.send(SECRET_INPUT))
    hook = await hooks.receiver.next()
    assert hook.headers["content-type"] == "application/json"
    assert_signed(hook, hooks.secrets[policy["id"]])
    payload = hook.payload
    assert payload["type"] == "approval.pending"
    assert isinstance(payload["createdAt"], str)
    data = payload["data"]
    assert data["id"] == approval["id"]
    assert data["status"] == "pending"
    assert data["policyId"] == policy["id"]
    assert data["approvalUrl"] == approval["approvalUrl"]
    assert data["inputPreview"] == {
        "to": "cfo@example.com",
        "password": "[redacted]",
        "apiKey": "[redacted]",
    }
    assert_no_secrets(hook)


@pytest.mark.parametrize(("verb", "event"), [("approve", "approved"), ("reject", "rejected")])
async def test_a_decision_is_posted_too(hooks: Hooks, verb: str, event: str) -> None:
    policy = await hooks.policy()
    approval = pending(await hooks.gates.send(SECRET_INPUT))
    assert (await hooks.receiver.next()).payload["type"] == "approval.pending"
    await hooks.gates.decide(approval["id"], verb, "checked")
    hook = await hooks.receiver.next()
    assert_signed(hook, hooks.secrets[policy["id"]])
    assert hook.payload["type"] == f"approval.{event}"
    data = hook.payload["data"]
    assert (data["id"], data["status"], data["reason"]) == (approval["id"], event, "checked")
    assert data["decidedBy"].startswith("api_key:")
    assert_no_secrets(hook)


async def test_a_timeout_is_posted_as_the_policys_default_outcome(hooks: Hooks) -> None:
    await hooks.policy(timeoutSeconds=60, defaultOnTimeout="expire")
    approval = pending(await hooks.gates.send({"to": "a@example.com"}))
    await hooks.receiver.next()
    await expire(hooks.gates, approval["id"])
    await hooks.gates.approval(approval["id"])  # looking at it applies the timeout
    hook = await hooks.receiver.next()
    assert hook.payload["type"] == "approval.expired"
    assert hook.payload["data"]["decidedBy"] == "system:timeout"


async def test_enforced_values_never_reach_the_webhook(hooks: Hooks) -> None:
    await hooks.policy()
    partial = await hooks.gates.api.post(
        "/partials",
        {
            "workspaceId": hooks.gates.api.workspace_id,
            "integrationName": "outbox",
            "name": "Fixed reply-to",
            "values": {"replyTo": ENFORCED},
            "enforcedKeys": ["replyTo"],
            "isDefault": True,
        },
    )
    assert partial.status_code == 201, partial.text
    pending(await hooks.gates.send({"to": "a@example.com"}))
    hook = await hooks.receiver.next()
    assert hook.payload["data"]["inputPreview"]["replyTo"] == "[redacted]"
    assert_no_secrets(hook)


async def test_notify_only_runs_the_action_and_posts_what_ran(hooks: Hooks) -> None:
    policy = await hooks.policy(decision="notify_only")
    response = await hooks.gates.send(SECRET_INPUT)
    assert response.status_code == 200, response.text
    assert len(hooks.gates.kit.runs) == 1
    hook = await hooks.receiver.next()
    assert_signed(hook, hooks.secrets[policy["id"]])
    assert hook.payload["type"] == "action.notified"
    data = hook.payload["data"]
    assert data["policyId"] == policy["id"]
    assert (data["integrationAlias"], data["actionName"]) == ("mailer", "send")
    assert data["inputPreview"]["password"] == "[redacted]"
    assert_no_secrets(hook)


async def test_a_failed_delivery_is_retried_with_the_same_body(hooks: Hooks) -> None:
    policy = await hooks.policy()
    hooks.receiver.answers.extend([500, 503])
    pending(await hooks.gates.send({"to": "a@example.com"}))
    attempts = [await hooks.receiver.next() for _ in range(3)]
    assert [a.answered for a in attempts] == [500, 503, 200]
    assert len({a.body for a in attempts}) == 1
    for attempt in attempts:
        assert_signed(attempt, hooks.secrets[policy["id"]])
    await hooks.delivered.at_least(1)
    assert list(hooks.delivered) == [("approval.pending", 200)]


async def test_a_slow_receiver_never_holds_up_the_call(hooks: Hooks) -> None:
    await hooks.policy()
    hooks.receiver.release = anyio.Event()  # the receiver holds every request from now on
    with anyio.fail_after(5):
        first = pending(await hooks.gates.send({"to": "a@example.com"}))
        held = await hooks.receiver.next()
        approved = await hooks.gates.decide(first["id"], "approve")
        assert approved.status_code == 200
    assert held.payload["data"]["id"] == first["id"]
    assert hooks.delivered == []
    hooks.receiver.release.set()
    await hooks.delivered.at_least(2)


async def test_private_receivers_are_refused_unless_allowed(settings: Settings) -> None:
    async with hooked(settings, allow_private=False) as hooks:
        await hooks.policy()
        pending(await hooks.gates.send({"to": "a@example.com"}))
        await hooks.delivered.at_least(1)
        assert list(hooks.delivered) == [("approval.pending", 0)]
        assert hooks.receiver.nothing_arrived()


async def test_a_receiver_that_keeps_failing_is_given_up_on(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    await hooks.policy()
    hooks.receiver.answers.extend([500] * 10)
    with caplog.at_level(logging.ERROR, logger="treadle.engine.webhooks"):
        pending(await hooks.gates.send({"to": "a@example.com"}))
        await hooks.delivered.at_least(1)
    assert list(hooks.delivered) == [("approval.pending", 500)]
    assert len(hooks.receiver.answers) == 5  # five attempts, then no more
    assert "gave up" in caplog.text
