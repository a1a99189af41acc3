"""The Slack integration end to end, over REST execute and MCP, against the Slack emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from emulators.harness import FACES, Stage, Tools, assert_well_described, open_stage
from emulators.slack import BOT_USER, SlackEmulator
from treadle.catalog.builtin.slack import integration
from treadle.catalog.providers import rest, retry

from mcp_harness import free_port

pytestmark = pytest.mark.anyio

TOKEN = "xoxb-1111-2222-s3cr3tSlackT0ken"


@pytest.fixture(scope="module")
async def stage(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stage[SlackEmulator]]:
    data_dir = tmp_path_factory.mktemp("slack")
    async with open_stage(
        data_dir, "slack", TOKEN, lambda: SlackEmulator(TOKEN), api_path="/api"
    ) as opened:
        yield opened


@pytest.fixture
def slack(stage: Stage[SlackEmulator]) -> SlackEmulator:
    return stage.fresh()


@pytest.fixture(params=FACES)
async def tools(
    request: pytest.FixtureRequest, stage: Stage[SlackEmulator], slack: SlackEmulator
) -> AsyncIterator[Tools]:
    async with stage.tools(request.param) as opened:
        yield opened


async def test_send_channel_message_posts_with_the_token_and_returns_slacks_answer(
    tools: Tools, slack: SlackEmulator
) -> None:
    answer = await tools.call(
        "send_channel_message", {"channel": "C01GENERAL", "text": "Deployed", "unfurl_links": False}
    )

    output = answer.output()
    assert output["ok"] is True
    assert output["channel"] == "C01GENERAL"
    assert output["message"]["text"] == "Deployed"
    assert slack.messages["C01GENERAL"][-1]["ts"] == output["ts"]
    [seen] = slack.recorder.calls("/chat.postMessage")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["content-type"] == "application/json; charset=utf-8"
    assert seen.json() == {"channel": "C01GENERAL", "text": "Deployed", "unfurl_links": False}


async def test_send_channel_message_replies_in_a_thread(tools: Tools, slack: SlackEmulator) -> None:
    parent = slack.post("C02RANDOM0", "Anyone around?")

    answer = await tools.call(
        "send_channel_message",
        {"channel": "#random", "text": "Here", "thread_ts": parent["ts"]},
    )

    assert answer.output()["message"]["thread_ts"] == parent["ts"]


async def test_send_direct_message_opens_the_conversation_then_posts(
    tools: Tools, slack: SlackEmulator
) -> None:
    answer = await tools.call("send_direct_message", {"user": "U02BOB0000", "text": "Hi Bob"})

    output = answer.output()
    assert output["channel"] == "D02BOB0000"
    assert output["message"]["text"] == "Hi Bob"
    assert [seen.path for seen in slack.recorder.seen] == [
        "/api/conversations.open",
        "/api/chat.postMessage",
    ]
    assert slack.recorder.seen[0].json() == {"users": "U02BOB0000"}


async def test_send_direct_message_to_an_unknown_user_is_an_upstream_error(
    tools: Tools, slack: SlackEmulator
) -> None:
    answer = await tools.call("send_direct_message", {"user": "U09NOBODY0", "text": "Hi"})

    assert answer.kind == "upstream"
    assert answer.error == "user_not_found"
    assert not slack.recorder.calls("/chat.postMessage")


async def test_update_message_replaces_the_text(tools: Tools, slack: SlackEmulator) -> None:
    posted = await tools.call("send_channel_message", {"channel": "C03DEPLOYS", "text": "v1"})
    ts = posted.output()["ts"]

    answer = await tools.call("update_message", {"channel": "C03DEPLOYS", "ts": ts, "text": "v2"})

    output = answer.output()
    assert (output["ok"], output["ts"], output["text"]) == (True, ts, "v2")
    assert slack.messages["C03DEPLOYS"][-1]["text"] == "v2"


async def test_update_message_of_someone_else_is_an_upstream_error(
    tools: Tools, slack: SlackEmulator
) -> None:
    theirs = slack.post("C01GENERAL", "not yours")

    answer = await tools.call(
        "update_message", {"channel": "C01GENERAL", "ts": theirs["ts"], "text": "mine now"}
    )

    assert (answer.kind, answer.error) == ("upstream", "cant_update_message")
    assert answer.body["detail"]["message"]


async def test_add_reaction_reacts_once(tools: Tools, slack: SlackEmulator) -> None:
    message = slack.post("C01GENERAL", "Shipped!")
    reaction = {"channel": "C01GENERAL", "timestamp": message["ts"], "name": "tada"}

    first = await tools.call("add_reaction", reaction)
    again = await tools.call("add_reaction", reaction)

    assert first.output() == {"ok": True}
    assert message["reactions"] == [{"name": "tada", "users": [BOT_USER], "count": 1}]
    assert (again.kind, again.error) == ("upstream", "already_reacted")


async def test_list_channels_gathers_short_pages_up_to_the_limit_and_continues(
    tools: Tools, slack: SlackEmulator
) -> None:
    slack.page_cap = 1

    first = (await tools.call("list_channels", {"limit": 2})).output()
    rest_of_them = (
        await tools.call("list_channels", {"cursor": first["response_metadata"]["next_cursor"]})
    ).output()

    assert [c["name"] for c in first["channels"]] == ["general", "random"]
    assert first["response_metadata"]["next_cursor"]
    # Archived channels are left out unless asked for.
    assert [c["name"] for c in rest_of_them["channels"]] == ["deploys", "outside"]
    assert rest_of_them["response_metadata"]["next_cursor"] == ""
    assert [s.param("limit") for s in slack.recorder.calls("/conversations.list")][:2] == [
        "2",
        "1",
    ]


async def test_list_channels_can_include_archived_ones(tools: Tools) -> None:
    output = (await tools.call("list_channels", {"exclude_archived": False})).output()

    assert "old-stuff" in [c["name"] for c in output["channels"]]


async def test_list_users_returns_members_with_ids_and_names(tools: Tools) -> None:
    output = (await tools.call("list_users", {"limit": 2})).output()

    assert [(m["id"], m["real_name"]) for m in output["members"]] == [
        ("U01ALICE00", "Alice Archer"),
        ("U02BOB0000", "Bob Baker"),
    ]
    assert output["response_metadata"]["next_cursor"]


async def test_get_channel_history_reads_newest_first_and_says_whether_more_remain(
    tools: Tools, slack: SlackEmulator
) -> None:
    for text in ("one", "two", "three"):
        slack.post("C01GENERAL", text)

    page = (await tools.call("get_channel_history", {"channel": "C01GENERAL", "limit": 2})).output()
    cursor = page["response_metadata"]["next_cursor"]
    last = (
        await tools.call("get_channel_history", {"channel": "C01GENERAL", "cursor": cursor})
    ).output()

    assert [m["text"] for m in page["messages"]] == ["three", "two"]
    assert page["has_more"] is True
    assert [m["text"] for m in last["messages"]] == ["one"]
    assert last["has_more"] is False


async def test_a_missing_channel_is_an_upstream_error_with_slacks_code(tools: Tools) -> None:
    answer = await tools.call("send_channel_message", {"channel": "C99MISSING", "text": "x"})

    assert answer.kind == "upstream"
    assert answer.error == "channel_not_found"
    assert answer.body["detail"]["message"]
    if answer.status is not None:
        assert answer.status == 200


async def test_a_refused_token_asks_to_reauthenticate(tools: Tools, slack: SlackEmulator) -> None:
    slack.token = "xoxb-rotated"

    answer = await tools.call("list_users", {})

    assert (answer.kind, answer.error) == ("refused", "CONNECTION_ERROR")
    if answer.status is not None:
        assert answer.status == 400


async def test_a_rate_limited_call_is_retried_after_retry_after(
    tools: Tools, slack: SlackEmulator
) -> None:
    slack.recorder.fail(
        "/chat.postMessage",
        429,
        {"ok": False, "error": "ratelimited"},
        headers={"Retry-After": "0"},
        times=2,
    )

    answer = await tools.call("send_channel_message", {"channel": "C01GENERAL", "text": "hi"})

    assert answer.output()["ok"] is True
    assert len(slack.recorder.calls("/chat.postMessage")) == 3
    assert len(slack.messages["C01GENERAL"]) == 1


async def test_a_rate_limit_that_persists_is_reported_after_the_retries(
    tools: Tools, slack: SlackEmulator
) -> None:
    slack.recorder.fail(
        "/users.list",
        429,
        {"ok": False, "error": "ratelimited"},
        headers={"Retry-After": "0"},
        times=10,
    )

    answer = await tools.call("list_users", {})

    assert (answer.kind, answer.error) == ("upstream", "rate_limited")
    assert answer.body["detail"]["retryAfter"] >= 1
    assert len(slack.recorder.calls("/users.list")) == 1 + retry.RETRY_BUDGET.max_retries


async def test_a_long_retry_after_is_reported_at_once_not_waited_out(
    tools: Tools, slack: SlackEmulator
) -> None:
    slack.recorder.fail(
        "/users.list", 429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "120"}
    )

    answer = await tools.call("list_users", {})

    assert (answer.kind, answer.error) == ("upstream", "rate_limited")
    assert answer.body["detail"]["retryAfter"] == 120
    assert len(slack.recorder.calls("/users.list")) == 1


async def test_a_rate_limit_reported_in_the_body_is_retried_too(
    tools: Tools, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slack names no wait here: the budget's fallback applies.
    monkeypatch.setattr(retry, "RETRY_BUDGET", retry.RetryBudget(fallback_seconds=0))
    slack.recorder.fail("/chat.postMessage", 200, {"ok": False, "error": "ratelimited"})

    answer = await tools.call("send_channel_message", {"channel": "C01GENERAL", "text": "hi"})

    assert answer.output()["ok"] is True


async def test_a_server_error_is_an_upstream_error(tools: Tools, slack: SlackEmulator) -> None:
    slack.recorder.fail("/conversations.list", 503, "<html>Service Unavailable</html>")

    answer = await tools.call("list_channels", {})

    assert (answer.kind, answer.error) == ("upstream", "server_error")
    assert answer.body["detail"]["httpStatus"] == 503


async def test_a_slow_answer_times_out_as_an_action_failure(
    tools: Tools, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest, "REQUEST_TIMEOUT_SECONDS", 0.1)
    released = slack.recorder.hold("/users.list")
    try:
        answer = await tools.call("list_users", {})
    finally:
        released.set()

    assert (answer.kind, answer.error) == ("refused", "ACTION_FAILED")
    assert answer.body["reason"] == "timeout"


@pytest.mark.parametrize("face", FACES)
async def test_an_unreachable_slack_is_an_action_failure(
    stage: Stage[SlackEmulator], face: str
) -> None:
    alias = await stage.configure(base_url=f"http://127.0.0.1:{free_port()}/api")
    async with stage.tools(face, alias) as tools:
        answer = await tools.call("list_users", {})

    assert (answer.kind, answer.error) == ("refused", "ACTION_FAILED")
    assert answer.body["reason"] == "connect_failed"


@pytest.mark.parametrize("face", FACES)
async def test_loopback_is_refused_unless_the_workspace_allows_private_networks(
    stage: Stage[SlackEmulator], slack: SlackEmulator, face: str
) -> None:
    alias = await stage.configure(settings={})
    async with stage.tools(face, alias) as tools:
        answer = await tools.call("list_users", {})

    assert (answer.kind, answer.error) == ("refused", "ACTION_FAILED")
    assert answer.body["reason"] == "destination_not_allowed"
    assert not slack.recorder.seen


def test_every_action_is_closed_described_and_honestly_annotated() -> None:
    assert_well_described(
        integration,
        read_only={"list_channels", "list_users", "get_channel_history"},
        destructive={"update_message"},
    )
    channel = integration.action("send_channel_message")
    assert channel is not None
    assert channel.input_schema["properties"]["channel"]["x-treadle-options"] == {
        "action": "list_channels",
        "itemsField": "channels",
        "valueField": "id",
        "labelField": "name",
    }


async def test_mcp_tools_carry_option_lists_and_hints(stage: Stage[SlackEmulator]) -> None:
    async with stage.tools("mcp") as tools:
        listed = await tools.listed()

    assert set(listed) == set(integration.action_names)
    schema = listed["get_channel_history"].input_schema
    assert schema["properties"]["channel"]["x-treadle-options"]["action"] == "list_channels"
    assert schema["additionalProperties"] is False
    hints = listed["list_channels"].annotations
    assert hints is not None
    assert (hints.read_only_hint, hints.destructive_hint) == (True, False)
    update = listed["update_message"].annotations
    assert update is not None
    assert update.destructive_hint is True
