"""How partials merge into an execution's input, in exactly which order.

Non-enforced values of integration-wide partials, then of action-specific ones (within a group:
defaults alias-wide before alias-scoped, explicit ids in partialIds order), then the runtime
input, then every enforced value on top.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.settings import Settings

from conftest import Api, open_api

pytestmark = pytest.mark.anyio

MAIN = "probe_main"
OTHER = "probe_other"


async def _echo(ctx: ActionContext, data: JSONObject) -> JSONObject:
    return dict(data)


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration whose actions return the merged input.",
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            name="echo",
            display_name="Echo",
            description="Return the merged input.",
            input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
            run=_echo,
        ),
        Action(
            name="post",
            display_name="Post",
            description="Needs a channel.",
            input_schema={
                "type": "object",
                "properties": {"channel": {"type": "string"}, "text": {"type": "string"}},
                "required": ["channel", "text"],
            },
            run=_echo,
        ),
    ),
)
OTHER_INTEGRATION = Integration(
    name="other",
    display_name="Other",
    description="Test-only integration for partials of another integration.",
    auth_kind=AuthKind.NONE,
    actions=(PROBE.actions[0],),
)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with open_api(settings, Catalog([PROBE, OTHER_INTEGRATION])) as configured:
        await configured.configure("probe", integrationAlias=MAIN)
        await configured.configure("probe", integrationAlias=OTHER)
        yield configured


async def partial(
    api: Api,
    name: str,
    values: dict[str, Any],
    *,
    action: str | None = None,
    alias: str | None = None,
    enforced: tuple[str, ...] = (),
    default: bool = False,
    integration: str = "probe",
    workspace_id: str | None = None,
) -> str:
    body: dict[str, Any] = {
        "workspaceId": workspace_id or api.workspace_id,
        "integrationName": integration,
        "name": name,
        "values": values,
        "enforcedKeys": list(enforced),
        "isDefault": default,
    }
    if action is not None:
        body["actionName"] = action
    if alias is not None:
        body["integrationAlias"] = alias
    created = await api.post("/partials", body)
    assert created.status_code == 201, created.text
    partial_id: str = created.json()["partial"]["id"]
    return partial_id


async def run(
    api: Api,
    runtime: dict[str, Any],
    *,
    partial_ids: list[str] | None = None,
    action: str = "echo",
    alias: str = MAIN,
) -> dict[str, Any]:
    body: dict[str, Any] = {"input": runtime}
    if partial_ids is not None:
        body["partialIds"] = partial_ids
    response = await api.execute(
        integrationName="probe", actionName=action, integrationAlias=alias, **body
    )
    assert response.status_code == 200, response.text
    output: dict[str, Any] = response.json()["output"]
    return output


async def refusal(api: Api, partial_ids: list[str], alias: str = MAIN) -> dict[str, Any]:
    response = await api.execute(
        integrationName="probe",
        actionName="echo",
        integrationAlias=alias,
        partialIds=partial_ids,
    )
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "VALIDATION_ERROR"
    return body


async def test_default_partials_merge_wide_then_alias_then_action_then_runtime_then_enforced(
    api: Api,
) -> None:
    # Created most specific first, so creation order alone cannot explain the result.
    await partial(api, "action-alias", {"a": "SA"}, action="echo", alias=MAIN, default=True)
    await partial(
        api,
        "action",
        {"a": "S", "b": "S", "lock1": "S-tries", "lock2": "S"},
        action="echo",
        enforced=("lock2",),
        default=True,
    )
    await partial(api, "wide-alias", {"a": "WA", "b": "WA", "c": "WA"}, alias=MAIN, default=True)
    await partial(
        api,
        "wide",
        {"a": "W", "b": "W", "c": "W", "d": "W", "lock1": "W"},
        enforced=("lock1",),
        default=True,
    )
    await partial(api, "other-alias", {"a": "X", "x": "X"}, alias=OTHER, default=True)
    await partial(api, "other-action", {"y": "Y"}, action="post", default=True)
    await partial(api, "not-default", {"n": "N"}, alias=MAIN, action="echo")
    await partial(api, "other-integration", {"o": "O"}, integration="other", default=True)

    merged = await run(api, {"d": "R", "lock1": "R", "lock2": "R", "r": "R"})

    assert merged == {
        "a": "SA",  # action-specific alias-scoped: the last of the partials
        "b": "S",  # action-specific beats integration-wide
        "c": "WA",  # alias-scoped beats alias-wide within the integration-wide group
        "d": "R",  # runtime input beats every non-enforced partial value
        "lock1": "W",  # enforced beats runtime input and a later non-enforced value
        "lock2": "S",
        "r": "R",
    }


async def test_default_partials_of_another_alias_apply_only_to_that_alias(api: Api) -> None:
    await partial(api, "wide", {"a": "W"}, default=True)
    await partial(api, "other-alias", {"a": "X"}, alias=OTHER, default=True)
    assert await run(api, {}, alias=MAIN) == {"a": "W"}
    assert await run(api, {}, alias=OTHER) == {"a": "X"}


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (["E3", "E2", "E4", "E1"], {"a": "E3", "b": "E1", "c": "E1", "d": "E4"}),
        (["E1", "E4", "E2", "E3"], {"a": "E3", "b": "E2", "c": "E4", "d": "E2"}),
    ],
    ids=["action-first-in-ids", "action-last-in-ids"],
)
async def test_explicit_partial_ids_merge_integration_wide_then_action_each_in_ids_order(
    api: Api, order: list[str], expected: dict[str, str]
) -> None:
    ids = {
        "E1": await partial(api, "e1", {"a": "E1", "b": "E1", "c": "E1"}),
        "E2": await partial(api, "e2", {"a": "E2", "b": "E2", "d": "E2"}),
        "E3": await partial(api, "e3", {"a": "E3"}, action="echo"),
        "E4": await partial(api, "e4", {"c": "E4", "d": "E4"}, alias=MAIN),
    }
    assert await run(api, {}, partial_ids=[ids[name] for name in order]) == expected


async def test_explicit_partial_ids_replace_the_defaults_entirely(api: Api) -> None:
    await partial(
        api, "default", {"a": "D", "lock": "D"}, enforced=("lock",), default=True, alias=MAIN
    )
    chosen = await partial(api, "chosen", {"b": "C"})
    merged = await run(api, {"lock": "R"}, partial_ids=[chosen])
    assert merged == {"b": "C", "lock": "R"}


async def test_empty_partial_ids_run_without_any_partial(api: Api) -> None:
    await partial(api, "default", {"a": "D", "lock": "D"}, enforced=("lock",), default=True)
    await partial(api, "action-default", {"b": "D"}, action="echo", default=True)
    assert await run(api, {"lock": "R"}, partial_ids=[]) == {"lock": "R"}
    assert await run(api, {"lock": "R"}) == {"a": "D", "b": "D", "lock": "D"}


async def test_later_enforced_value_wins_over_an_earlier_enforced_value(api: Api) -> None:
    first = await partial(api, "first", {"lock": "first"}, enforced=("lock",))
    second = await partial(api, "second", {"lock": "second"}, enforced=("lock",))
    action = await partial(api, "action", {"lock": "action"}, action="echo", enforced=("lock",))
    assert await run(api, {"lock": "R"}, partial_ids=[second, first]) == {"lock": "first"}
    assert await run(api, {"lock": "R"}, partial_ids=[first, second]) == {"lock": "second"}
    assert await run(api, {"lock": "R"}, partial_ids=[action, first]) == {"lock": "action"}


async def test_an_earlier_enforced_value_beats_a_later_non_enforced_value(api: Api) -> None:
    locked = await partial(api, "locked", {"lock": "enforced"}, enforced=("lock",))
    loose = await partial(api, "loose", {"lock": "loose"}, action="echo")
    assert await run(api, {}, partial_ids=[locked, loose]) == {"lock": "enforced"}


async def test_partial_values_fill_required_fields_and_runtime_overrides_them(api: Api) -> None:
    await partial(api, "general", {"channel": "C-general"}, action="post", default=True)
    filled = await run(api, {"text": "hi"}, action="post")
    assert filled == {"channel": "C-general", "text": "hi"}
    overridden = await run(api, {"channel": "C-random", "text": "hi"}, action="post")
    assert overridden == {"channel": "C-random", "text": "hi"}


async def test_required_field_left_out_by_partial_ids_is_a_validation_error(api: Api) -> None:
    await partial(api, "general", {"channel": "C-general"}, action="post", default=True)
    response = await api.execute(
        integrationName="probe",
        actionName="post",
        integrationAlias=MAIN,
        partialIds=[],
        input={"text": "hi"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert response.json()["field"] == "channel"


async def test_enforced_value_is_validated_with_the_rest_of_the_input(api: Api) -> None:
    await partial(api, "wide", {"text": 5}, enforced=("text",), default=True)
    response = await api.execute(
        integrationName="probe", actionName="echo", integrationAlias=MAIN, input={"text": "ok"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert response.json()["field"] == "text"


async def test_duplicate_partial_ids_apply_once(api: Api) -> None:
    first = await partial(api, "first", {"a": "1"})
    second = await partial(api, "second", {"a": "2"})
    assert await run(api, {}, partial_ids=[first, second, first]) == {"a": "2"}


async def test_partial_ids_that_do_not_apply_are_validation_errors_naming_the_index(
    api: Api,
) -> None:
    fine = await partial(api, "fine", {"a": "1"})
    other_alias = await partial(api, "other-alias", {"a": "X"}, alias=OTHER)
    other_action = await partial(api, "other-action", {"a": "Y"}, action="post")
    other_integration = await partial(api, "other-int", {"a": "O"}, integration="other")
    elsewhere = await api.post("/workspaces", {"name": "elsewhere"})
    foreign = await partial(
        api, "foreign", {"a": "F"}, workspace_id=elsewhere.json()["workspace"]["id"]
    )
    missing = "00000000-0000-0000-0000-000000000000"
    for bad in (other_alias, other_action, other_integration, foreign, missing):
        body = await refusal(api, [fine, bad])
        assert body["field"] == "partialIds[1]"


async def test_a_new_default_in_the_same_scope_replaces_the_previous_one(api: Api) -> None:
    first = await partial(api, "first", {"a": "1"}, default=True)
    second = await partial(api, "second", {"a": "2", "b": "2"})
    assert await run(api, {}) == {"a": "1"}
    switched = await api.post(f"/partials/{second}/set-default", {"isDefault": True})
    assert switched.status_code == 200, switched.text
    assert await run(api, {}) == {"a": "2", "b": "2"}
    unset = await api.post(f"/partials/{second}/set-default", {"isDefault": False})
    assert unset.status_code == 200
    assert await run(api, {}) == {}
    assert (await api.get(f"/partials/{first}")).json()["partial"]["isDefault"] is False


async def test_partial_changes_apply_to_the_next_call(api: Api) -> None:
    preset = await partial(api, "preset", {"a": "before"}, default=True)
    assert await run(api, {"a": "R"}) == {"a": "R"}
    updated = await api.patch(
        f"/partials/{preset}", {"values": {"a": "after"}, "enforcedKeys": ["a"]}
    )
    assert updated.status_code == 200, updated.text
    assert await run(api, {"a": "R"}) == {"a": "after"}
    deleted = await api.delete(f"/partials/{preset}")
    assert deleted.status_code == 200
    assert await run(api, {"a": "R"}) == {"a": "R"}
    gone = await refusal(api, [preset])
    assert gone["field"] == "partialIds[0]"
