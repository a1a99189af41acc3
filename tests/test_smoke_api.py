"""The README's kv-store flow through the real app: configure, preset, execute, audit."""

from __future__ import annotations

import pytest

from conftest import Api

pytestmark = pytest.mark.anyio


async def test_enforced_partial_value_wins_over_runtime_input(api: Api) -> None:
    await api.configure("kv-store", settings={"persistence": {"scope": "workspace"}})
    partial = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "kv-store",
            "actionName": "put",
            "name": "notes",
            "values": {"key": "notes"},
            "enforcedKeys": ["key"],
            "isDefault": True,
        },
    )
    assert partial.status_code == 201, partial.text

    put = await api.execute(
        integrationName="kv-store", actionName="put", input={"key": "elsewhere", "value": 1}
    )
    assert put.status_code == 200, put.text
    assert put.json()["output"] == {"key": "notes", "value": 1}

    got = await api.execute(integrationName="kv-store", actionName="get", input={"key": "notes"})
    assert got.json()["output"] == {"key": "notes", "found": True, "value": 1}
