"""What an execution answers: success, third-party failure, action failure, crash, timeout."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx2
import pytest

from treadle.app import Gateway
from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.engine import Executor
from treadle.engine.limits import MonthlyQuota, SlidingWindowRateLimiter
from treadle.errors import ActionRuntimeError, ConnectionCredentialsError, UpstreamError
from treadle.settings import Settings

from conftest import Api, api_on

pytestmark = pytest.mark.anyio

SECRET = "sk-outcome-5e1d9a7c3b"
ACTION_TIMEOUT = 0.05


def _secret(ctx: ActionContext) -> str:
    assert ctx.connection is not None
    return ctx.connection.values["api_key"]


async def _ok(ctx: ActionContext, data: JSONObject) -> Any:
    return data.get("output", {"ok": True})


async def _upstream(ctx: ActionContext, data: JSONObject) -> Any:
    raise UpstreamError(
        "channel_not_found",
        {"hint": "The specified channel does not exist or the bot is not a member"},
    )


async def _upstream_echoing_the_key(ctx: ActionContext, data: JSONObject) -> Any:
    raise UpstreamError("invalid_auth", f"Incorrect API key provided: {_secret(ctx)}")


async def _broken(ctx: ActionContext, data: JSONObject) -> Any:
    raise ActionRuntimeError("Could not reach api.example.invalid", reason="unreachable")


async def _broken_with_key(ctx: ActionContext, data: JSONObject) -> Any:
    raise ActionRuntimeError(f"bad key {_secret(ctx)}", reason="unreachable", key=_secret(ctx))


async def _spoofing(ctx: ActionContext, data: JSONObject) -> Any:
    raise ActionRuntimeError("failed", error="OK", reason="spoof")


async def _crash(ctx: ActionContext, data: JSONObject) -> Any:
    raise RuntimeError(f"internal detail: token={_secret(ctx)}")


async def _hang(ctx: ActionContext, data: JSONObject) -> Any:
    await anyio.Event().wait()  # never set: only the timeout ends this call


async def _expired(ctx: ActionContext, data: JSONObject) -> Any:
    raise ConnectionCredentialsError("The API key was revoked upstream")


async def _not_json(ctx: ActionContext, data: JSONObject) -> Any:
    return {"when": datetime(2025, 1, 1, tzinfo=UTC)}


def _action(name: str, run: Any) -> Action:
    return Action(
        name=name,
        display_name=name,
        description=f"Test action {name}.",
        input_schema={"type": "object"},
        run=run,
    )


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration with one action per outcome.",
    auth_kind=AuthKind.API_KEY,
    actions=(
        _action("ok", _ok),
        _action("upstream", _upstream),
        _action("upstream_echo", _upstream_echoing_the_key),
        _action("broken", _broken),
        _action("broken_with_key", _broken_with_key),
        _action("spoofing", _spoofing),
        _action("crash", _crash),
        _action("hang", _hang),
        _action("expired", _expired),
        _action("not_json", _not_json),
    ),
)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    gateway = await Gateway.open(settings, catalog=Catalog([PROBE]))
    # The same pipeline with a timeout short enough that a hanging action ends the test fast.
    gateway.executor = Executor(
        gateway.store,
        gateway.catalog,
        gateway.http,
        SlidingWindowRateLimiter(),
        MonthlyQuota(gateway.store.usage),
        action_timeout=ACTION_TIMEOUT,
    )
    try:
        async with api_on(gateway) as configured:
            created = await configured.post(
                "/connections",
                {
                    "integrationName": "probe",
                    "type": "api_key",
                    "displayName": "Probe key",
                    "externalId": "conn_probe",
                    "values": {"api_key": SECRET},
                    "workspaceId": configured.workspace_id,
                },
            )
            assert created.status_code == 201, created.text
            await configured.configure("probe", connectionId="conn_probe")
            yield configured
    finally:
        await gateway.close()


async def run(api: Api, action: str, **input: Any) -> httpx2.Response:
    response = await api.execute(integrationName="probe", actionName=action, input=input)
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    return response


def action_failed(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "ACTION_FAILED"
    assert isinstance(body["message"], str)
    assert "success" not in body
    return body


async def test_success_answers_200_with_output_and_duration_in_milliseconds(api: Api) -> None:
    response = await run(api, "ok")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body == {"success": True, "output": {"ok": True}, "duration": body["duration"]}
    assert isinstance(body["duration"], int)
    assert 0 <= body["duration"] < 10_000


@pytest.mark.parametrize("output", [[1, "two"], "text", 3.5, None, {"nested": {"a": [None]}}])
async def test_any_json_output_is_passed_through_unchanged(api: Api, output: Any) -> None:
    response = await run(api, "ok", output=output)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    assert response.json()["output"] == output


async def test_third_party_error_answers_200_with_success_false_and_error_detail(
    api: Api,
) -> None:
    response = await run(api, "upstream")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["output"] == {
        "error": "channel_not_found",
        "detail": {"hint": "The specified channel does not exist or the bot is not a member"},
    }
    assert isinstance(body["duration"], int)
    assert set(body) == {"success", "output", "duration"}


async def test_action_runtime_error_is_action_failed_with_its_details(api: Api) -> None:
    body = action_failed(await run(api, "broken"))
    assert body["reason"] == "unreachable"


async def test_action_details_cannot_overwrite_the_error_code(api: Api) -> None:
    body = action_failed(await run(api, "spoofing"))
    assert body["reason"] == "spoof"


async def test_crashing_action_is_action_failed_without_internals(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await run(api, "crash")
    body = action_failed(response)
    assert body["reason"] == "crashed"
    assert "internal detail" not in response.text
    assert "RuntimeError" not in response.text
    # The server log keeps what went wrong, but never the connection's secret.
    assert "RuntimeError" in caplog.text
    assert SECRET not in caplog.text


async def test_hanging_action_times_out_as_action_failed(api: Api) -> None:
    with anyio.fail_after(5):
        response = await run(api, "hang")
    body = action_failed(response)
    assert body["reason"] == "timeout"


async def test_a_timed_out_call_leaves_the_gateway_serving(api: Api) -> None:
    with anyio.fail_after(5):
        action_failed(await run(api, "hang"))
        response = await run(api, "ok")
    assert response.status_code == 200
    assert response.json()["success"] is True


async def test_revoked_credentials_are_a_connection_error(api: Api) -> None:
    response = await run(api, "expired")
    assert response.status_code == 400
    assert response.json()["error"] == "CONNECTION_ERROR"


async def test_output_that_is_not_json_is_action_failed_not_a_server_error(api: Api) -> None:
    body = action_failed(await run(api, "not_json"))
    assert body["reason"] == "invalid_output"


async def test_secret_echoed_in_failures_never_reaches_the_caller(api: Api) -> None:
    upstream = await run(api, "upstream_echo")
    assert upstream.status_code == 200
    assert upstream.json()["output"]["error"] == "invalid_auth"
    action_failed(await run(api, "broken_with_key"))
    activity = await api.get("/activity")
    assert SECRET not in activity.text


async def test_concurrent_calls_each_get_their_own_outcome(api: Api) -> None:
    results: dict[str, httpx2.Response] = {}

    async def call(action: str) -> None:
        results[action] = await run(api, action)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for action in ("ok", "upstream", "broken", "crash", "hang"):
                tasks.start_soon(call, action)
    assert results["ok"].json()["success"] is True
    assert results["upstream"].json()["success"] is False
    assert action_failed(results["broken"])["reason"] == "unreachable"
    assert action_failed(results["crash"])["reason"] == "crashed"
    assert action_failed(results["hang"])["reason"] == "timeout"
