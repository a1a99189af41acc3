"""`GET /api/v1/openapi.json` and `GET /docs`: every mounted operation is described, the
document is valid OpenAPI 3.1, and real answers conform to it."""

from __future__ import annotations

from typing import Any

import httpx2
import jsonschema
import pytest

from treadle.api.openapi import operations
from treadle.api.routes import api_routes
from treadle.app import Gateway
from treadle.http_app import build_http_app

from conftest import Api

pytestmark = pytest.mark.anyio


def test_every_mounted_route_is_described() -> None:
    undescribed = [
        f"{entry.method} {entry.path} ({entry.handler.__module__}.{entry.handler.__name__})"
        for entry in operations([api_routes()])
        if entry.operation is None or not entry.operation.summary.strip()
    ]
    assert undescribed == [], "add @operation(...) (treadle.api.openapi) to: " + ", ".join(
        undescribed
    )


async def _document(gateway: Gateway) -> dict[str, Any]:
    transport = httpx2.ASGITransport(app=build_http_app(gateway))
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        # No Authorization: the document is public, like the page that renders it.
        answer = await client.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    document: dict[str, Any] = answer.json()
    return document


async def test_document_lists_every_operation_with_its_errors(gateway: Gateway) -> None:
    document = await _document(gateway)
    assert document["openapi"] == "3.1.0"
    listed = {
        (method.upper(), path) for path, methods in document["paths"].items() for method in methods
    }
    mounted = {
        (entry.method, entry.path.replace(":path", "")) for entry in operations([api_routes()])
    }
    assert listed == mounted
    create = document["paths"]["/api/v1/workspaces"]["post"]
    assert create["security"] == [{"bearer": []}]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateWorkspace"
    }
    unauthorized = create["responses"]["401"]["content"]["application/json"]["schema"]
    assert unauthorized["allOf"][1]["properties"]["error"]["enum"] == ["UNAUTHORIZED"]
    assert "VALIDATION_ERROR" in create["responses"]["400"]["description"]
    # The create links to the operations on what it created (the stateful phase follows them).
    assert create["responses"]["201"]["links"]["get_workspace"]["parameters"] == {
        "workspace_id": "$response.body#/workspace/id"
    }
    execute = document["paths"]["/api/v1/actions/execute"]["post"]
    assert {"200", "202", "400", "403", "409", "422", "429"} <= set(execute["responses"])
    assert document["paths"]["/api/v1/openapi.json"]["get"]["security"] == []


def _validator(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    schema = document["paths"][path][method]["responses"][str(status)]["content"][
        "application/json"
    ]["schema"]
    return jsonschema.Draft202012Validator(
        {**schema, "components": document["components"]},
        format_checker=jsonschema.FormatChecker(),
    )


async def test_real_answers_conform_to_the_document(api: Api) -> None:
    document = (await api.client.get("/api/v1/openapi.json")).json()
    # `$ref`s point into #/components: resolve them against the document itself.
    registry_doc = document

    def check(path: str, method: str, answer: httpx2.Response) -> None:
        schema = registry_doc["paths"][path][method]["responses"][str(answer.status_code)]
        body_schema = schema["content"]["application/json"]["schema"]
        jsonschema.validate(answer.json(), {**body_schema, "components": document["components"]})

    created = await api.post("/workspaces", {"name": "Docs"})
    check("/api/v1/workspaces", "post", created)
    check("/api/v1/workspaces", "get", await api.get("/workspaces"))
    check("/api/v1/workspaces", "post", await api.post("/workspaces", {"name": ""}))
    check(
        "/api/v1/workspaces/{workspace_id}",
        "get",
        await api.get("/workspaces/missing"),
    )
    installed = await api.post(
        f"/workspaces/{api.workspace_id}/integrations",
        {"integrationName": "kv-store", "connectionStrategy": "fixed"},
    )
    check("/api/v1/workspaces/{workspace_id}/integrations", "post", installed)
    check("/api/v1/integrations", "get", await api.get("/integrations"))
    executed = await api.execute(
        integrationName="kv-store", actionName="set", input={"key": "a", "value": "1"}
    )
    check("/api/v1/actions/execute", "post", executed)
    check("/api/v1/activity", "get", await api.get("/activity"))
    check("/api/v1/api-keys", "get", await api.get("/api-keys"))
    anonymous = await api.client.get("/api/v1/workspaces", headers={"Authorization": ""})
    check("/api/v1/workspaces", "get", anonymous)


async def test_docs_page_renders_the_document_with_packaged_assets(gateway: Gateway) -> None:
    transport = httpx2.ASGITransport(app=build_http_app(gateway))
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "treadle-init.js"):
            assert f"/docs/assets/{asset}" in page.text
            served = await client.get(f"/docs/assets/{asset}")
            assert served.status_code == 200, asset
            assert len(served.content) > 100
        init = (await client.get("/docs/assets/treadle-init.js")).text
        assert "/api/v1/openapi.json" in init
        # No CDN: nothing the page loads leaves the gateway.
        assert "https://" not in page.text
