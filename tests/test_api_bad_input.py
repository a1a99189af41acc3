"""Bad input on every endpoint: always the documented 4xx body, never a 500, nothing changed.

Each test runs one endpoint (parametrised over the table in `test_api_auth`) against a
populated workspace and loops over its hostile cases, so a failure names endpoint and case.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from starlette.routing import Route

from test_api_auth import (
    BODY_ENDPOINTS,
    ENDPOINTS,
    ID_ENDPOINTS,
    Endpoint,
    Templates,
    World,
    gateway,  # noqa: F401
    send,
    settings,  # noqa: F401
    snapshot,
    templates,  # noqa: F401
)
from treadle.api.bodies import MAX_BODY_BYTES
from treadle.api.routes import api_routes

from conftest import Api

pytestmark = pytest.mark.anyio


@pytest.fixture
def world(request: pytest.FixtureRequest) -> World:
    """The populated world of `test_api_auth` (named `world`, so `settings` copies it in)."""
    prepared: Templates = request.getfixturevalue("templates")
    return prepared.world


# What a refused request may answer; anything else (a 500 above all) is a bug.
REFUSALS = {
    400: {"VALIDATION_ERROR", "NO_UPDATES"},
    403: {"SCOPE_DENIED"},
    404: {"NOT_FOUND"},
    409: {"DUPLICATE", "ALIAS_CONFLICT"},
    413: {"PAYLOAD_TOO_LARGE"},
}

# One of each kind, tried in every string field...
HOSTILE_STRINGS = [
    "",
    "x" * 10_000,
    "a\x00b",
    "line\nbreak\x1b[31m",
    "'; DROP TABLE workspaces; --",
    "<script>alert(1)</script>{{7*7}}${jndi:ldap://example.com/a}%s%n",
    "\u202e😀\ufeffﷺ\u2028\x85",
]
# ...and more, where cheap: as keys and values of free-form JSON and as query parameters.
MORE_HOSTILE_STRINGS = [
    *HOSTILE_STRINGS,
    " ",
    "\r\n",
    '" OR 1=1 --',
    "../../etc/passwd",
    "😀" * 50,
    "\x00",
    "\x7f",
]

HOSTILE_IDS = [
    "x" * 5_000,
    "%00",
    "a%0Ab",
    "'%20OR%20'1'='1",
    "%3Cscript%3E",
    "%F0%9F%98%80",
    "%FF%FE",
    "pi_",
    "00000000-0000-0000-0000-000000000000",
    "%20",
]


def _skip_for(endpoint: Endpoint) -> tuple[str, ...]:
    # A refused execution is itself recorded in the activity log (and counted): that is the
    # audit trail working, not a change made by the refused request.
    return ("activity", "usage_counters") if endpoint.template == "/actions/execute" else ()


def assert_refused(response: httpx2.Response, case: object) -> None:
    assert response.status_code in REFUSALS, (case, response.status_code, response.text[:300])
    body = response.json()
    assert body["error"] in REFUSALS[response.status_code], (case, body)
    assert isinstance(body["message"], str), case
    assert "Traceback" not in response.text, case


def assert_answered(response: httpx2.Response, case: object) -> None:
    """Accepted, or refused the documented way."""
    if response.status_code < 300:
        return
    assert_refused(response, case)


def _free_form_field(body: dict[str, Any]) -> str | None:
    return next((key for key, value in body.items() if isinstance(value, dict)), None)


def _with(body: dict[str, Any], value: Any) -> dict[str, Any]:
    """`body` with `value` planted where free-form JSON is allowed (values, metadata, settings,
    input), else in the first field."""
    planted = dict(body)
    free = _free_form_field(planted)
    if free is not None:
        planted[free] = {**planted[free], "planted": value}
    else:
        planted[next(iter(planted))] = value
    return planted


def _raw_json(body: dict[str, Any], placeholder: str, raw: str) -> bytes:
    """`body` as JSON text with the string `placeholder` replaced by `raw` text, which may be
    JSON that `json.dumps` would never write."""
    return json.dumps(body).replace(json.dumps(placeholder), raw).encode()


def malformed_bodies(endpoint: Endpoint, ids: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    valid = endpoint.valid_body(ids)
    assert valid is not None
    yield "empty", b""
    yield "blank", b"  \n "
    yield "truncated", json.dumps(valid).encode()[:-1]
    yield "python repr", repr(valid).encode()
    yield "two objects", json.dumps(valid).encode() * 2
    yield "trailing garbage", json.dumps(valid).encode() + b" x"
    yield "not utf-8", b'{"name": "\xff\xfe"}'
    yield "latin-1 body", json.dumps(_with(valid, "café"), ensure_ascii=False).encode("latin-1")
    for literal in (b"null", b"[]", b"[{}]", b'"text"', b"1", b"true", b"1e999"):
        yield f"non-object {literal!r}", literal
    planted = _with(valid, "@@")
    for constant in ("NaN", "Infinity", "-Infinity"):
        yield constant, _raw_json(planted, "@@", constant)
    yield "huge integer", _raw_json(planted, "@@", "9" * 5000)
    yield "lone surrogate", json.dumps(_with(valid, "\ud800")).encode()
    yield "lone surrogate key", json.dumps(_with(valid, {"\udfff": 1})).encode()
    yield "deep nesting", _raw_json(planted, "@@", "[" * 100_000 + "]" * 100_000)
    yield "nesting the encoders cannot store", _raw_json(planted, "@@", "[" * 990 + "]" * 990)


def _partial(api: Api, values_json: str) -> bytes:
    body = {"workspaceId": api.workspace_id, "integrationName": "kv-store", "name": "p"}
    return _raw_json({**body, "values": "@@"}, "@@", values_json)


async def test_lone_surrogate_is_refused_so_it_cannot_poison_a_listing(api: Api) -> None:
    for values in ('{"a": "\\ud800"}', '{"\\udfff": 1}', '{"a": ["\\udbff"]}'):
        response = await api.post("/partials", content=_partial(api, values))
        assert_refused(response, values)
    # A surrogate *pair* is ordinary, valid text.
    paired = await api.post("/partials", content=_partial(api, '{"a": "\\ud83d\\ude00"}'))
    assert paired.status_code == 201, paired.text
    assert paired.json()["partial"]["values"] == {"a": "😀"}
    listed = await api.get("/partials", params={"workspaceId": api.workspace_id})
    assert listed.status_code == 200
    assert listed.json()["total"] == 1


async def test_nan_and_infinity_are_not_json(api: Api) -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = {"workspaceId": api.workspace_id, "externalId": "u", "metadata": {"x": "@@"}}
        response = await api.post("/end-users", content=_raw_json(body, "@@", constant))
        assert response.status_code == 400, (constant, response.text)
    assert (await api.get("/end-users")).json()["total"] == 0


async def test_integer_too_long_to_convert_is_a_validation_error(api: Api) -> None:
    response = await api.post("/partials", content=_partial(api, '{"n": ' + "7" * 4301 + "}"))
    assert response.status_code == 400, response.text[:200]
    fine = await api.post("/partials", content=_partial(api, '{"n": ' + "7" * 4000 + "}"))
    assert fine.status_code == 201, fine.text[:200]


async def test_nesting_is_bounded_but_ordinary_depth_is_fine(api: Api) -> None:
    deep = await api.post("/partials", content=_partial(api, "[" * 900 + "]" * 900))
    assert deep.status_code == 400, deep.text[:200]
    ordinary = await api.post(
        "/partials", content=_partial(api, '{"a": %s}' % ("[" * 40 + "]" * 40))
    )
    assert ordinary.status_code == 201, ordinary.text[:200]


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: e.id)
async def test_malformed_json_is_a_validation_error_and_changes_nothing(
    api: Api, world: World, endpoint: Endpoint
) -> None:
    before = await snapshot(api)
    for case, content in malformed_bodies(endpoint, world.ids):
        response = await send(
            api, endpoint, world.ids, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (case, response.text[:300])
        assert response.json()["error"] == "VALIDATION_ERROR", case
    assert await snapshot(api) == before


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: e.id)
async def test_body_over_one_mebibyte_is_payload_too_large(
    api: Api, world: World, endpoint: Endpoint
) -> None:
    valid = json.dumps(endpoint.valid_body(world.ids)).encode()
    too_big = valid + b" " * (MAX_BODY_BYTES + 1 - len(valid))

    async def streamed() -> AsyncIterator[bytes]:
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]

    before = await snapshot(api)
    declared = await send(api, endpoint, world.ids, content=too_big)
    assert declared.status_code == 413, declared.text[:300]
    assert declared.json()["error"] == "PAYLOAD_TOO_LARGE"
    # Without a Content-Length the cap still holds while reading.
    chunked = await send(api, endpoint, world.ids, content=streamed())
    assert chunked.status_code == 413, chunked.text[:300]
    assert chunked.json()["error"] == "PAYLOAD_TOO_LARGE"
    assert await snapshot(api) == before

    # Exactly at the limit is still read: the valid body padded to it is accepted (which also
    # shows the bodies the other tests here spoil are valid to begin with).
    at_limit = valid + b" " * (MAX_BODY_BYTES - len(valid))
    accepted = await send(api, endpoint, world.ids, content=at_limit)
    assert accepted.status_code in (200, 201), accepted.text[:300]


def wrong_types(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["true", 1, 0, [], {}]
    if isinstance(value, str):
        return [1, 1.5, True, [], {}, ["x"]]
    if isinstance(value, dict):
        return ["x", 1, True, [], [value]]
    if isinstance(value, list):
        return ["x", 1, True, {}, [[]]]
    raise AssertionError(value)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: e.id)
async def test_wrong_types_missing_unknown_or_no_fields_are_refused(
    api: Api, world: World, endpoint: Endpoint
) -> None:
    valid = endpoint.valid_body(world.ids)
    assert valid is not None
    cases: list[tuple[str, dict[str, Any]]] = []
    for field, value in valid.items():
        cases += [(f"{field}={wrong!r}", {**valid, field: wrong}) for wrong in wrong_types(value)]
    for field in endpoint.required:
        cases.append((f"without {field}", {k: v for k, v in valid.items() if k != field}))
        cases.append((f"{field}=null", {**valid, field: None}))
    cases.append(("unknown field", {**valid, "bogus": 1}))
    cases.append(("unknown camelCase variant", {**valid, "WorkspaceId": "x"}))
    cases.append(("unknown snake_case variant", {**valid, "workspace_id": "x"}))
    skip = _skip_for(endpoint)
    before = await snapshot(api, skip=skip)
    for case, body in cases:
        response = await send(api, endpoint, world.ids, json=body)
        assert response.status_code == 400, (case, response.text[:300])
        assert response.json()["error"] == "VALIDATION_ERROR", case
    # Workspace integrations (and workspaces, like them) answer NO_UPDATES; partials answer
    # VALIDATION_ERROR (each operation's codes: GET /api/v1/openapi.json).
    no_updates = endpoint.method == "PATCH" and endpoint.template.startswith("/workspaces/")
    empty = await send(api, endpoint, world.ids, json={})
    assert empty.status_code == 400, empty.text
    assert empty.json()["error"] == ("NO_UPDATES" if no_updates else "VALIDATION_ERROR")
    assert await snapshot(api, skip=skip) == before


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: e.id)
async def test_hostile_strings_in_any_field_are_answered_without_a_crash(
    api: Api, world: World, endpoint: Endpoint
) -> None:
    valid = endpoint.valid_body(world.ids)
    assert valid is not None
    skip = _skip_for(endpoint)
    strings = [field for field, value in valid.items() if isinstance(value, str)]
    for field in strings:
        for hostile in HOSTILE_STRINGS:
            case = (field, hostile[:40])
            before = await snapshot(api, skip=skip)
            response = await send(api, endpoint, world.ids, json={**valid, field: hostile})
            assert_answered(response, case)
            if response.status_code >= 400:
                assert await snapshot(api, skip=skip) == before, case
    # Free-form JSON (values, metadata, settings, input) takes any text as keys and values.
    free = _free_form_field(valid)
    if free is not None:
        planted = {text[:100] or "empty": text for text in MORE_HOSTILE_STRINGS}
        body = {**valid, free: {**valid[free], **planted}}
        assert_answered(await send(api, endpoint, world.ids, json=body), free)


@pytest.mark.parametrize("endpoint", ID_ENDPOINTS, ids=lambda e: e.id)
async def test_unknown_or_hostile_ids_are_not_found(
    api: Api, world: World, endpoint: Endpoint
) -> None:
    before = await snapshot(api)
    for placeholder in world.ids:
        if "{" + placeholder + "}" not in endpoint.template:
            continue
        for hostile in HOSTILE_IDS:
            ids = {**world.ids, placeholder: hostile}
            response = await send(api, endpoint, ids, json=endpoint.valid_body(world.ids))
            assert response.status_code == 404, (placeholder, hostile[:40], response.text[:200])
            assert response.json()["error"] == "NOT_FOUND"
    assert await snapshot(api) == before


QUERY_ENDPOINTS = {
    "/connections": "workspaceId",
    "/end-users": "workspaceId",
    "/partials": "workspaceId",
    "/activity": "workspaceId",
}


@pytest.mark.parametrize("path", sorted(QUERY_ENDPOINTS))
async def test_hostile_query_parameters_are_refused_the_documented_way(
    api: Api, world: World, path: str
) -> None:
    before = await snapshot(api)
    for hostile in [*MORE_HOSTILE_STRINGS, *HOSTILE_IDS]:
        response = await api.get(path, params={QUERY_ENDPOINTS[path]: hostile})
        assert_refused(response, hostile[:40])
    assert await snapshot(api) == before


@pytest.mark.parametrize("name", ["type", "status", "since", "until", "cursor", "limit"])
async def test_hostile_activity_filters_are_validation_errors(api: Api, name: str) -> None:
    for hostile in ("'; DROP TABLE activity; --", "\x00", "-1", "1e3", "9" * 30):
        response = await api.get("/activity", params={name: hostile})
        assert response.status_code == 400, (name, hostile[:20], response.text[:200])
        assert response.json()["error"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    ("name", "number"), [("cursor", "9" * 5000), ("limit", "9" * 5000), ("limit", "²")]
)
async def test_activity_paging_numbers_int_cannot_read_are_validation_errors(
    api: Api, name: str, number: str
) -> None:
    response = await api.get("/activity", params={name: number})
    assert response.status_code == 400, response.text[:200]
    assert response.json()["error"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS[:3], ids=lambda e: e.id)
async def test_garbage_content_length_is_not_trusted(
    api: Api, world: World, endpoint: Endpoint
) -> None:
    before = await snapshot(api)
    for declared in ("9" * 5000, "²", "-1", "0x10", "1e9"):
        response = await send(
            api,
            endpoint,
            world.ids,
            content=b"{not json",
            headers={"Content-Length": declared.encode()},
        )
        assert_refused(response, declared[:20])
    assert await snapshot(api) == before


async def test_control_characters_in_a_path_cannot_forge_access_log_lines(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="treadle.access")
    for path in ("/workspaces/x%0A200%20GET%20/forged", "/partials/%00%0D%1B[2J", "/e%E2%80%A8x"):
        response = await api.get(path)
        assert_refused(response, path)
    lines = [record.getMessage() for record in caplog.records if record.name == "treadle.access"]
    assert len(lines) == 3
    for line in lines:
        assert line.isprintable(), line


async def test_unknown_routes_and_methods_answer_with_the_error_shape(api: Api) -> None:
    for method, path, status, code in (
        ("GET", "/nope", 404, "NOT_FOUND"),
        ("GET", "/workspaces/a/b/c/d", 404, "NOT_FOUND"),
        ("PUT", "/workspaces", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/integrations", 405, "METHOD_NOT_ALLOWED"),
        ("PATCH", "/connections/x", 405, "METHOD_NOT_ALLOWED"),
    ):
        response = await api.request(method, path)
        assert response.status_code == status, (method, path, response.text)
        assert response.json()["error"] == code


# The resources of the REST API core; other faces (MCP servers, ...) have their own tests.
CORE = (
    "/workspaces",
    "/integrations",
    "/connections",
    "/end-users",
    "/partials",
    "/actions",
    "/activity",
)


def test_the_endpoint_table_covers_every_core_api_route() -> None:
    """So that "every endpoint" above stays true when a route is added."""
    served = {
        (method, route.path)
        for route in api_routes().routes
        if isinstance(route, Route) and route.path.startswith(CORE)
        for method in route.methods or ()
        if method != "HEAD"
    }
    tested = {(e.method, e.template.split("?")[0].replace("kv-store", "{name}")) for e in ENDPOINTS}
    renamed = {
        "{ws}": "{workspace_id}",
        "{wi}": "{id}",
        "{conn}": "{connection_id}",
        "{user}": "{end_user_id}",
        "{partial}": "{id}",
    }
    for short, long in renamed.items():
        tested = {(method, path.replace(short, long)) for method, path in tested}
    assert served == tested
