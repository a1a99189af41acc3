"""The built-in `kv-store`: six actions, two persistence scopes, end users kept apart."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy as sa

from treadle.store import schema

from conftest import Api

pytestmark = pytest.mark.anyio

WORKSPACE_SCOPE = {"persistence": {"scope": "workspace"}}


async def call(
    api: Api,
    action: str,
    *,
    end_user: str | None = None,
    alias: str | None = None,
    workspace_id: str | None = None,
    **input: Any,
) -> httpx2.Response:
    body: dict[str, Any] = {"integrationName": "kv-store", "actionName": action, "input": input}
    if end_user is not None:
        body["endUserId"] = end_user
    if alias is not None:
        body["integrationAlias"] = alias
    if workspace_id is not None:
        body["workspaceId"] = workspace_id
    return await api.execute(**body)


async def kv(api: Api, action: str, **fields: Any) -> Any:
    response = await call(api, action, **fields)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    return response.json()["output"]


def refused(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    return body


@pytest.fixture
async def shared(api: Api) -> Api:
    """kv-store configured with one key space for the whole workspace."""
    await api.configure("kv-store", settings=WORKSPACE_SCOPE)
    return api


async def test_put_then_get_returns_the_value(shared: Api) -> None:
    value = {"nested": [1, 2.5, "three", True, None, {"deep": "yes"}]}
    assert await kv(shared, "put", key="k", value=value) == {"key": "k", "value": value}
    assert await kv(shared, "get", key="k") == {"key": "k", "found": True, "value": value}


async def test_put_replaces_the_previous_value(shared: Api) -> None:
    await kv(shared, "put", key="k", value="first")
    await kv(shared, "put", key="k", value=["second"])
    assert (await kv(shared, "get", key="k"))["value"] == ["second"]


@pytest.mark.parametrize("value", [0, False, "", [], {}])
async def test_falsy_values_are_stored_and_found(shared: Api, value: Any) -> None:
    await kv(shared, "put", key="k", value=value)
    assert await kv(shared, "get", key="k") == {"key": "k", "found": True, "value": value}


async def test_null_is_a_value_that_can_be_stored(shared: Api) -> None:
    await kv(shared, "put", key="k", value=None)
    assert await kv(shared, "get", key="k") == {"key": "k", "found": True, "value": None}
    assert (await kv(shared, "list_keys"))["keys"] == ["k"]
    await kv(shared, "put", key="k", value="replaced")
    await kv(shared, "put", key="k", value=None)
    assert await kv(shared, "get", key="k") == {"key": "k", "found": True, "value": None}
    assert await kv(shared, "delete", key="k") == {"key": "k", "deleted": True}
    assert (await kv(shared, "get", key="k"))["found"] is False


async def test_list_actions_treat_a_stored_null_as_no_list_yet(shared: Api) -> None:
    await kv(shared, "put", key="k", value=None)
    removed = await kv(shared, "remove_from_list", key="k", value=None)
    assert removed == {"key": "k", "value": [], "removed": 0}
    assert (await kv(shared, "get", key="k"))["found"] is True
    assert await kv(shared, "add_to_list", key="k", value=None) == {"key": "k", "value": [None]}
    removed = await kv(shared, "remove_from_list", key="k", value=None)
    assert removed == {"key": "k", "value": [], "removed": 1}


async def test_get_of_a_missing_key_is_not_found(shared: Api) -> None:
    assert await kv(shared, "get", key="nope") == {"key": "nope", "found": False, "value": None}


async def test_delete_removes_the_key_and_reports_whether_it_existed(shared: Api) -> None:
    await kv(shared, "put", key="k", value=1)
    assert await kv(shared, "delete", key="k") == {"key": "k", "deleted": True}
    assert (await kv(shared, "get", key="k"))["found"] is False
    assert await kv(shared, "delete", key="k") == {"key": "k", "deleted": False}


async def test_list_keys_returns_keys_in_order_with_count(shared: Api) -> None:
    for key in ("b", "a", "c/1", "c/0"):
        await kv(shared, "put", key=key, value=key)
    assert await kv(shared, "list_keys") == {"keys": ["a", "b", "c/0", "c/1"], "count": 4}


async def test_list_keys_filters_by_prefix_and_limits(shared: Api) -> None:
    for key in ("user:1", "user:2", "user:3", "users", "team:1"):
        await kv(shared, "put", key=key, value=1)
    assert (await kv(shared, "list_keys", prefix="user:"))["keys"] == ["user:1", "user:2", "user:3"]
    limited = await kv(shared, "list_keys", prefix="user", limit=2)
    assert limited == {"keys": ["user:1", "user:2"], "count": 2}
    assert (await kv(shared, "list_keys", prefix="zzz"))["keys"] == []


async def test_list_keys_prefix_treats_sql_wildcards_literally(shared: Api) -> None:
    for key in ("50%_off", "50xyoff", "a_b", "axb"):
        await kv(shared, "put", key=key, value=1)
    assert (await kv(shared, "list_keys", prefix="50%"))["keys"] == ["50%_off"]
    assert (await kv(shared, "list_keys", prefix="a_"))["keys"] == ["a_b"]


async def test_keys_are_exact_unicode_text(shared: Api) -> None:
    for key in ("Ключ", "ключ", "键 with spaces", "emoji 🎉"):
        await kv(shared, "put", key=key, value=key)
    for key in ("Ключ", "ключ", "键 with spaces", "emoji 🎉"):
        assert (await kv(shared, "get", key=key))["value"] == key
    assert (await kv(shared, "list_keys", prefix="emoji"))["keys"] == ["emoji 🎉"]


async def test_add_to_list_creates_and_appends(shared: Api) -> None:
    assert await kv(shared, "add_to_list", key="l", value="a") == {"key": "l", "value": ["a"]}
    assert await kv(shared, "add_to_list", key="l", value={"b": 1}) == {
        "key": "l",
        "value": ["a", {"b": 1}],
    }
    assert await kv(shared, "add_to_list", key="l", value="a") == {
        "key": "l",
        "value": ["a", {"b": 1}, "a"],
    }
    assert (await kv(shared, "get", key="l"))["value"] == ["a", {"b": 1}, "a"]


async def test_add_to_list_with_unique_skips_values_already_present(shared: Api) -> None:
    await kv(shared, "add_to_list", key="l", value="a")
    await kv(shared, "add_to_list", key="l", value={"x": [1]})
    again = await kv(shared, "add_to_list", key="l", value={"x": [1]}, unique=True)
    assert again["value"] == ["a", {"x": [1]}]
    new = await kv(shared, "add_to_list", key="l", value="b", unique=True)
    assert new["value"] == ["a", {"x": [1]}, "b"]


async def test_add_to_list_on_a_value_that_is_not_a_list_fails_and_keeps_it(shared: Api) -> None:
    await kv(shared, "put", key="k", value={"not": "a list"})
    response = await call(shared, "add_to_list", key="k", value=1)
    assert refused(response, 400, "ACTION_FAILED")["reason"] == "not_a_list"
    assert (await kv(shared, "get", key="k"))["value"] == {"not": "a list"}


async def test_remove_from_list_removes_every_occurrence(shared: Api) -> None:
    await kv(shared, "put", key="l", value=["a", "b", "a", {"c": 1}, "a"])
    removed = await kv(shared, "remove_from_list", key="l", value="a")
    assert removed == {"key": "l", "value": ["b", {"c": 1}], "removed": 3}
    removed = await kv(shared, "remove_from_list", key="l", value={"c": 1})
    assert removed == {"key": "l", "value": ["b"], "removed": 1}
    absent = await kv(shared, "remove_from_list", key="l", value="zzz")
    assert absent == {"key": "l", "value": ["b"], "removed": 0}
    assert (await kv(shared, "get", key="l"))["value"] == ["b"]


async def test_remove_from_list_of_a_missing_key_removes_nothing_and_creates_nothing(
    shared: Api,
) -> None:
    removed = await kv(shared, "remove_from_list", key="l", value="a")
    assert removed == {"key": "l", "value": [], "removed": 0}
    assert (await kv(shared, "get", key="l"))["found"] is False


async def test_remove_from_list_on_a_value_that_is_not_a_list_fails(shared: Api) -> None:
    await kv(shared, "put", key="k", value="text")
    response = await call(shared, "remove_from_list", key="k", value="t")
    assert refused(response, 400, "ACTION_FAILED")["reason"] == "not_a_list"


async def test_concurrent_appends_are_all_kept(shared: Api) -> None:
    async def append(item: int) -> None:
        await kv(shared, "add_to_list", key="l", value=item)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            for item in range(20):
                tasks.start_soon(append, item)
    stored = (await kv(shared, "get", key="l"))["value"]
    assert sorted(stored) == list(range(20))


@pytest.mark.parametrize(
    ("action", "input", "field"),
    [
        ("put", {"key": "k"}, "value"),
        ("put", {"value": 1}, "key"),
        ("get", {"key": ""}, "key"),
        ("get", {"key": "k" * 513}, "key"),
        ("get", {"key": 5}, "key"),
        ("get", {"key": "k", "extra": 1}, "extra"),
        ("list_keys", {"limit": 0}, "limit"),
        ("list_keys", {"limit": 1001}, "limit"),
        ("add_to_list", {"key": "k", "value": 1, "unique": "yes"}, "unique"),
        ("remove_from_list", {"key": "k"}, "value"),
    ],
)
async def test_invalid_input_is_a_validation_error_naming_the_field(
    shared: Api, action: str, input: dict[str, Any], field: str
) -> None:
    response = await call(shared, action, **input)
    assert refused(response, 400, "VALIDATION_ERROR")["field"] == field


async def test_longest_allowed_key_is_accepted(shared: Api) -> None:
    key = "k" * 512
    await kv(shared, "put", key=key, value=1)
    assert (await kv(shared, "get", key=key))["found"] is True


async def test_end_user_scope_is_the_default_and_needs_an_end_user(api: Api) -> None:
    await api.configure("kv-store")
    response = await call(api, "put", key="k", value=1)
    assert refused(response, 400, "VALIDATION_ERROR")["field"] == "endUserId"
    stored = await kv(api, "put", end_user="alice", key="k", value=1)
    assert stored == {"key": "k", "value": 1}


async def test_end_users_see_only_their_own_keys(api: Api) -> None:
    await api.configure("kv-store", settings={"persistence": {"scope": "end_user"}})
    await kv(api, "put", end_user="alice", key="shared-name", value="alice's")
    await kv(api, "put", end_user="alice", key="alice-only", value=1)
    await kv(api, "put", end_user="bob", key="shared-name", value="bob's")

    assert (await kv(api, "get", end_user="alice", key="shared-name"))["value"] == "alice's"
    assert (await kv(api, "get", end_user="bob", key="shared-name"))["value"] == "bob's"
    assert (await kv(api, "get", end_user="bob", key="alice-only"))["found"] is False
    assert (await kv(api, "list_keys", end_user="alice"))["keys"] == ["alice-only", "shared-name"]
    assert (await kv(api, "list_keys", end_user="bob"))["keys"] == ["shared-name"]

    assert (await kv(api, "delete", end_user="bob", key="alice-only"))["deleted"] is False
    await kv(api, "add_to_list", end_user="bob", key="alice-only", value="bob")
    assert (await kv(api, "get", end_user="alice", key="alice-only"))["value"] == 1
    await kv(api, "delete", end_user="bob", key="shared-name")
    assert (await kv(api, "get", end_user="alice", key="shared-name"))["found"] is True


async def test_end_user_ids_that_look_alike_do_not_share_keys(api: Api) -> None:
    await api.configure("kv-store")
    await kv(api, "put", end_user="user:1", key="k", value="a")
    await kv(api, "put", end_user="user", key="1/k", value="b")
    await kv(api, "put", end_user="User:1", key="k", value="c")
    assert (await kv(api, "get", end_user="user:1", key="k"))["value"] == "a"
    assert (await kv(api, "list_keys", end_user="user"))["keys"] == ["1/k"]
    assert (await kv(api, "get", end_user="User:1", key="k"))["value"] == "c"


async def test_workspace_scope_is_shared_by_all_end_users_and_needs_none(shared: Api) -> None:
    await kv(shared, "put", end_user="alice", key="k", value="from alice")
    assert (await kv(shared, "get", end_user="bob", key="k"))["value"] == "from alice"
    assert (await kv(shared, "get", key="k"))["value"] == "from alice"
    await kv(shared, "add_to_list", end_user="bob", key="l", value="bob")
    await kv(shared, "add_to_list", key="l", value="anonymous")
    assert (await kv(shared, "get", end_user="carol", key="l"))["value"] == ["bob", "anonymous"]


async def test_each_alias_has_its_own_key_space(api: Api) -> None:
    await api.configure("kv-store", integrationAlias="notes", settings=WORKSPACE_SCOPE)
    await api.configure("kv-store", integrationAlias="cache", settings=WORKSPACE_SCOPE)
    await kv(api, "put", alias="notes", key="k", value="note")
    assert (await kv(api, "get", alias="cache", key="k"))["found"] is False
    assert (await kv(api, "get", alias="notes", key="k"))["value"] == "note"


async def test_workspaces_do_not_share_keys(api: Api) -> None:
    await api.configure("kv-store", settings=WORKSPACE_SCOPE)
    other = (await api.post("/workspaces", {"name": "other"})).json()["workspace"]["id"]
    created = await api.post(
        f"/workspaces/{other}/integrations",
        {"integrationName": "kv-store", "connectionStrategy": "fixed", "settings": WORKSPACE_SCOPE},
    )
    assert created.status_code == 201, created.text
    await kv(api, "put", key="k", value="here")
    assert (await kv(api, "get", workspace_id=other, key="k"))["found"] is False
    await kv(api, "put", workspace_id=other, key="k", value="there")
    assert (await kv(api, "get", key="k"))["value"] == "here"


async def test_deleting_the_workspace_integration_deletes_its_keys(api: Api) -> None:
    configured = await api.configure("kv-store", settings=WORKSPACE_SCOPE)
    await kv(api, "put", key="k", value=1)
    deleted = await api.delete(f"/workspaces/{api.workspace_id}/integrations/{configured['id']}")
    assert deleted.status_code == 200
    table = schema.kv_entries
    async with api.gateway.store.db.read() as conn:
        left = (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar()
    assert left == 0
    await api.configure("kv-store", settings=WORKSPACE_SCOPE)
    assert (await kv(api, "get", key="k"))["found"] is False


async def test_unknown_persistence_scope_is_refused_when_configuring(api: Api) -> None:
    response = await api.post(
        f"/workspaces/{api.workspace_id}/integrations",
        {
            "integrationName": "kv-store",
            "connectionStrategy": "fixed",
            "settings": {"persistence": {"scope": "org"}},
        },
    )
    assert refused(response, 400, "VALIDATION_ERROR")["field"].startswith("settings")
