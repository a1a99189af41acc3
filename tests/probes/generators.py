"""Hypothesis strategies for requests to the REST API, derived from the app itself.

Routes come from `api_routes()` and bodies from the JSON schemas of the request models
(`Body` subclasses) of each route's module, so an endpoint or field added later is fuzzed
without anyone touching this file.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from starlette.routing import Route

from treadle.api.bodies import Body
from treadle.api.routes import api_routes

Json = Any

ODD_STRINGS = [
    "",
    " ",
    "alice ",
    " alice",
    "..",
    "../../etc/passwd",
    "%00",
    "\x00",
    "null",
    "undefined",
    "0",
    "-1",
    "9" * 40,
    "a" * 300,
    "pi_",
    "srv_",
    "apr_",
    "trd_",
    "mcp_",
    "\u202egnp.exe",
    "😀",
    "' OR '1'='1",
    '"; DROP TABLE orgs; --',
    "{id}",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "\ud7ff\ue000",
    "line\nbreak",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO"]
QUERY_KEYS = [
    "workspaceId",
    "projectId",
    "limit",
    "cursor",
    "status",
    "type",
    "source",
    "since",
    "until",
    "name",
    "integrationName",
    "endUserId",
    "externalId",
]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "garbage",
]
RAW_BODIES = [
    b"",
    b"{",
    b"{not json",
    b"null",
    b"[]",
    b'"a string"',
    b"42",
    b"NaN",
    b'{"a": Infinity}',
    b"1" * 5000,
    b'{"a": 1e999999}',
    b'{"a": "\\ud800"}',
    b"[" * 200 + b"]" * 200,
    b'{"a":' * 100 + b"1" + b"}" * 100,
    b"\xff\xfe\x00{",
    b"a=1&b=2",
    b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
    b"<?xml version='1.0'?><a/>",
]


@dataclass(frozen=True)
class Endpoint:
    """One path template of the API, with the methods it serves and its request models."""

    template: str
    methods: frozenset[str]
    params: tuple[str, ...]
    models: tuple[type[Body], ...]

    @property
    def id(self) -> str:
        return f"{'|'.join(sorted(self.methods - {'HEAD'}))} {self.template}"


def _models(module_name: str) -> tuple[type[Body], ...]:
    module = importlib.import_module(module_name)
    return tuple(
        found
        for found in vars(module).values()
        if inspect.isclass(found)
        and issubclass(found, Body)
        and found is not Body
        and found.__module__ == module_name
    )


def endpoints() -> list[Endpoint]:
    """Every `/api/v1` route, grouped by template (one endpoint per path)."""
    grouped: dict[str, Endpoint] = {}
    for route in api_routes().routes:
        assert isinstance(route, Route)
        found = grouped.get(route.path)
        methods = frozenset(route.methods or ())
        if found is None:
            grouped[route.path] = Endpoint(
                route.path,
                methods,
                tuple(route.param_convertors),
                _models(route.endpoint.__module__),
            )
        else:
            grouped[route.path] = Endpoint(
                route.path, found.methods | methods, found.params, found.models
            )
    return list(grouped.values())


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of `choices`, each drawn with its relative weight (the first is what shrinking
    leads to)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda index: table[index])


def odd_text() -> st.SearchStrategy[str]:
    return st.sampled_from(ODD_STRINGS) | st.text(max_size=30)


def identifiers(known: list[str]) -> st.SearchStrategy[str]:
    """Real ids of both orgs most of the time, otherwise anything."""
    return weighted(
        (6, st.sampled_from(known)),
        (1, st.sampled_from(known).map(lambda value: value.upper())),
        (1, st.uuids().map(str)),
        (1, st.uuids().map(lambda value: f"pi_{value}")),
        (1, odd_text()),
    )


def json_values(known: list[str]) -> st.SearchStrategy[Json]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        odd_text(),
        identifiers(known) if known else odd_text(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text(), inner, max_size=4),
        max_leaves=12,
    )


_PLAUSIBLE = {
    "integrationName": ["kv-store", "http", "slack", "github", "gmail", "google-sheets", "nope"],
    "pieceName": ["kv-store", "http"],
    "actionName": ["put", "get", "delete", "list_keys", "send_request", "nope"],
    "integrationAlias": ["notes", "mine", "web", "nope"],
    "connectionStrategy": ["fixed", "per_user", "per_user_with_fallback", "nope"],
    "name": ["probe", "second", "default", "gate"],
    "externalId": ["alice", "bob", "conn-bearer", "alice "],
    "endUserId": ["alice", "bob", "alice "],
}


class _SchemaStrategies:
    """A small JSON-Schema-to-strategy translation: enough for pydantic's model schemas."""

    def __init__(self, defs: dict[str, Any], known: list[str], workspaces: list[str]) -> None:
        self.defs = defs
        self.known = known
        self.workspaces = workspaces

    def value(self, schema: dict[str, Any], name: str = "") -> st.SearchStrategy[Json]:
        if "$ref" in schema:
            return self.value(self.defs[schema["$ref"].rsplit("/", 1)[-1]], name)
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "const" in schema:
            return st.just(schema["const"])
        if "anyOf" in schema:
            return st.one_of([self.value(option, name) for option in schema["anyOf"]])
        kind = schema.get("type")
        if kind == "string":
            return self._string(schema, name)
        if kind == "integer":
            low, high = schema.get("minimum", -1000), schema.get("maximum", 10**6)
            return st.integers(min_value=low - 1, max_value=high + 1)
        if kind == "number":
            return st.floats(allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            items = self.value(schema.get("items", {}), name)
            return st.lists(items, min_size=0, max_size=min(schema.get("maxItems", 3), 3))
        if kind == "object":
            return self.object(schema)
        return json_values(self.known)

    def _string(self, schema: dict[str, Any], name: str) -> st.SearchStrategy[str]:
        limit = schema.get("maxLength", 50)
        shaped = (
            st.from_regex(schema["pattern"], fullmatch=True).map(lambda text: text[:limit])
            if "pattern" in schema
            else st.text(min_size=schema.get("minLength", 0), max_size=min(limit, 40))
        )
        if name in ("workspaceId", "projectId") and self.workspaces:
            return weighted((6, st.sampled_from(self.workspaces)), (1, identifiers(self.known)))
        if name.endswith(("Id", "Ids")) or name in ("id", "connectionId"):
            return weighted((6, identifiers(self.known)), (2, shaped), (1, odd_text()))
        if name in _PLAUSIBLE:
            return weighted((6, st.sampled_from(_PLAUSIBLE[name])), (2, shaped), (1, odd_text()))
        return weighted((4, shaped), (1, odd_text()))

    def object(self, schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Json]]:
        properties: dict[str, Any] = schema.get("properties", {})
        if not properties:
            values = schema.get("additionalProperties")
            inner = self.value(values) if isinstance(values, dict) else json_values(self.known)
            return st.dictionaries(odd_text(), inner, max_size=3)
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {key: self.value(prop, key) for key, prop in properties.items() if key in required},
            optional={
                key: self.value(prop, key)
                for key, prop in properties.items()
                if key not in required
            },
        )


@functools.cache
def _model_strategy(
    model: type[Body], known: tuple[str, ...], workspaces: tuple[str, ...]
) -> st.SearchStrategy[dict[str, Json]]:
    # Built once per model: pydantic's schema and the strategies are costly to rebuild per draw.
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    return _SchemaStrategies(defs, list(known), list(workspaces)).object(schema)


@st.composite
def model_body(
    draw: st.DrawFn, models: tuple[type[Body], ...], known: list[str], workspaces: list[str]
) -> Json:
    """A body shaped like one of the endpoint's request models, then perhaps broken."""
    model = draw(st.sampled_from(models))
    body: dict[str, Json] = draw(_model_strategy(model, tuple(known), tuple(workspaces)))
    mutation = draw(st.sampled_from(["none"] * 5 + ["drop", "extra", "retype"]))
    if mutation == "drop" and body:
        body.pop(draw(st.sampled_from(sorted(body))))
    elif mutation == "extra":
        body[draw(odd_text())] = draw(json_values(known))
    elif mutation == "retype" and body:
        body[draw(st.sampled_from(sorted(body)))] = draw(json_values(known))
    return body


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    content: bytes | None

    def describe(self) -> str:
        body = (self.content or b"")[:300]
        return f"{self.method} {self.path} {self.params} {self.headers} {body!r}"


def _header_value(text: str) -> str:
    # What an HTTP client can send at all: visible ASCII (the rest is not a header value).
    return "".join(char for char in text if " " <= char <= "~")


# The resource a path segment names, as the world's id keys spell it; a segment not listed
# (a new route) draws from every id.
SEGMENT_KINDS = {
    "workspaces": "workspace",
    "integrations": "integration",
    "connections": "connection",
    "end-users": "end_user",
    "partials": "partial",
    "approval-policies": "policy",
    "approvals": "approval",
    "servers": "server",
    "oauth-apps": "oauth_app",
    "api-keys": "api_key",
    "identity-providers": "identity_provider",
    "upstreams": "upstream",
    "oauth-clients": "oauth_client",
    "oauth-grants": "oauth_grant",
}


def param_kinds(endpoint: Endpoint) -> dict[str, str | None]:
    """For each path parameter, the kind of resource the segment before it names."""
    kinds: dict[str, str | None] = {}
    segments = endpoint.template.strip("/").split("/")
    for index, segment in enumerate(segments):
        if segment.startswith("{") and index > 0:
            # `{client_id:path}`: the name before any convertor.
            kinds[segment.strip("{}").split(":")[0]] = SEGMENT_KINDS.get(segments[index - 1])
    return kinds


def requests(
    endpoint: Endpoint, known: list[str], keys: list[str], pools: dict[str, list[str]]
) -> st.SearchStrategy[FuzzRequest]:
    """Requests at `endpoint`: its own methods most of the time, any other now and then.

    The parts are built once here, not per draw: building strategies costs more than drawing.
    """
    ids = identifiers(known)
    methods = weighted(
        (8, st.sampled_from(sorted(endpoint.methods))), (1, st.sampled_from(METHODS))
    )
    kinds = param_kinds(endpoint)
    segments: dict[str, st.SearchStrategy[str]] = {}
    for param in endpoint.params:
        pool = pools.get(kinds.get(param) or "", [])
        if param in ("name", "integration_name"):  # catalog names, not ids
            pool = _PLAUSIBLE["integrationName"]
        segments[param] = weighted(
            (6 if pool else 0, st.sampled_from(pool or [""])),
            (2, ids),
            (1, st.sampled_from(_PLAUSIBLE["integrationName"])),
        )
    query = st.lists(
        st.tuples(
            weighted((4, st.sampled_from(QUERY_KEYS)), (1, odd_text())),
            weighted(
                (3, ids),
                (2, st.integers(-5, 10**12).map(str)),
                (1, st.sampled_from(["pending", "success", "rest", "action_execution"])),
                (1, odd_text()),
            ),
        ),
        max_size=3,
    )
    workspace_filter = weighted(
        (4, st.sampled_from(pools.get("workspace") or known)), (1, ids), (3, st.none())
    )
    authorization = weighted(
        (12, st.just(f"Bearer {keys[0]}")),
        (4, st.sampled_from(keys[1:]).map(lambda key: f"Bearer {key}")),
        (1, st.sampled_from(["", "Bearer", "Bearer trd_nope", "Basic dXNlcjpwYXNz"])),
        (1, odd_text().map(_header_value)),
    )
    content_type = weighted((6, st.just("application/json")), (2, st.sampled_from(CONTENT_TYPES)))
    end_user = weighted((3, st.none()), (1, odd_text().map(_header_value)))
    length = weighted((9, st.none()), (1, st.sampled_from(["0", "5", "99999999999999", "-1", "x"])))
    json_body = json_values(known).map(lambda value: json.dumps(value).encode())
    bodies = [
        (1, json_body),
        (1, st.sampled_from(RAW_BODIES) | st.binary(max_size=64)),
        (1, st.none()),
    ]
    if endpoint.models:
        shaped = model_body(endpoint.models, known, pools.get("workspace", []))
        bodies.append((6, shaped.map(lambda value: json.dumps(value).encode())))
    content = weighted(*bodies)

    @st.composite
    def draw_request(draw: st.DrawFn) -> FuzzRequest:
        path = endpoint.template
        for param, segment in segments.items():
            value = draw(segment)
            path = path.replace("{" + param + "}", quote(value, safe="") or "%20")
        params = draw(query)
        workspace = draw(workspace_filter)
        if workspace is not None and "workspaceId" not in {key for key, _ in params}:
            params.append(("workspaceId", workspace))
        headers = {"Authorization": draw(authorization)}
        optional = {
            "Content-Type": draw(content_type),
            "X-Treadle-End-User": draw(end_user),
            "Content-Length": draw(length),
        }
        headers.update({key: value for key, value in optional.items() if value is not None})
        return FuzzRequest(draw(methods), path, params, headers, draw(content))

    return draw_request()
