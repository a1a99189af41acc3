"""The OpenAPI 3.1 document of `/api/v1`, built from the routes and their models.

How to describe a route: decorate its handler with `@operation`, next to the handler, with the
pydantic models the handler really reads and answers with:

    @operation(
        "Create a workspace",                 # summary: required, one line
        body=CreateWorkspace,                 # the Body model the handler parses (or None)
        query=ListFilter,                     # a model whose fields are the query parameters
        responses={201: WorkspaceOut},        # status -> response model (None: no body)
        errors=[ErrorCode.DUPLICATE],         # refusals beyond the implied ones
    )
    async def create_workspace(request: Request) -> Response: ...

Implied errors, added to every operation so that no route repeats them: UNAUTHORIZED and
SCOPE_DENIED when `authenticated` (the default), VALIDATION_ERROR and PAYLOAD_TOO_LARGE with a
body, VALIDATION_ERROR with query parameters, NOT_FOUND with path parameters, INTERNAL_ERROR
and SERVICE_UNAVAILABLE (the database could not be reached) always. Error bodies are
`{"error": CODE, "message": ..., ...}`, one response per status with the codes it can carry
as an enum. Response models subclass `Out` (extra fields allowed, the
documented ones typed). The path, method and path parameters come from the Route itself, and
`tests/test_openapi.py` fails when a mounted route has no `@operation`, so the document and
the routes cannot part ways.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute, Mount, Route

from treadle import __version__
from treadle.errors import ErrorCode

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])

_ATTRIBUTE = "__treadle_operation__"
_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")


class Out(BaseModel):
    """Base of response models: the documented fields typed, others allowed (a client must
    ignore fields it does not know)."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(Out):
    """Every refusal: a stable code, a sentence for people, and the code's extra fields."""

    error: str
    message: str


class Deleted(Out):
    deleted: bool
    id: str


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    description: str = ""
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    errors: frozenset[ErrorCode] = frozenset()
    authenticated: bool = True


def operation(
    summary: str,
    *,
    description: str = "",
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    query: type[BaseModel] | None = None,
    responses: Mapping[int, type[BaseModel] | None],
    errors: Iterable[ErrorCode] = (),
    authenticated: bool = True,
) -> Callable[[Handler], Handler]:
    """Attach the description of an operation to its handler (see the module's docstring)."""
    described = Operation(
        summary=summary,
        description=description,
        body=body,
        body_required=body_required,
        query=query,
        responses=dict(responses),
        errors=frozenset(errors),
        authenticated=authenticated,
    )

    def attach(handler: Handler) -> Handler:
        setattr(handler, _ATTRIBUTE, described)
        return handler

    return attach


def described(handler: object) -> Operation | None:
    found = getattr(handler, _ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


@cache
def one(name: str, model: type[BaseModel], **more: Any) -> type[Out]:
    """`{name: model, ...more}`: the envelope of one resource (one class per shape, so the
    document names each once)."""
    fields: dict[str, Any] = {name: (model, ...)}
    fields.update({key: (value, ...) for key, value in more.items()})
    title = f"{model.__name__}{''.join(k.title() for k in more)}Envelope"
    return create_model(title, __base__=Out, **fields)


@cache
def listing(name: str, model: type[BaseModel]) -> type[Out]:
    """`{name: [model], total}`: the envelope of a list."""
    fields: dict[str, Any] = {name: (list[model], ...), "total": (int, ...)}  # type: ignore[valid-type]
    return create_model(f"{model.__name__}List", __base__=Out, **fields)


@dataclass(frozen=True, slots=True)
class Described:
    path: str
    method: str
    handler: Callable[..., Any]
    operation: Operation | None


def operations(routes: Iterable[BaseRoute], prefix: str = "") -> list[Described]:
    """Every (path, method) of `routes`, Mounts walked, HEAD left out (Starlette adds it)."""
    found: list[Described] = []
    for route in routes:
        if isinstance(route, Mount):
            found.extend(operations(route.routes, prefix + route.path))
        elif isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                found.append(
                    Described(
                        prefix + route.path, method, route.endpoint, described(route.endpoint)
                    )
                )
    return found


def _implied(op: Operation, path: str) -> set[ErrorCode]:
    codes = {ErrorCode.INTERNAL_ERROR, ErrorCode.SERVICE_UNAVAILABLE, *op.errors}
    if op.authenticated:
        codes |= {ErrorCode.UNAUTHORIZED, ErrorCode.SCOPE_DENIED}
    if op.body is not None:
        codes |= {ErrorCode.VALIDATION_ERROR, ErrorCode.PAYLOAD_TOO_LARGE}
    if op.query is not None:
        codes.add(ErrorCode.VALIDATION_ERROR)
    if _PARAM.search(path):
        codes.add(ErrorCode.NOT_FOUND)
    return codes


def _tag(path: str) -> str:
    parts = [part for part in path.removeprefix("/api/v1/").split("/") if not part.startswith("{")]
    return "/".join(parts[:2]) if parts and parts[0] == "mcp" else (parts[0] if parts else "")


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable",
    429: "Too many requests",
    500: "Internal error",
    502: "Bad gateway",
    503: "Service unavailable",
}


def build_document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every described operation under `routes`."""
    listed = [d for d in operations(routes) if d.operation is not None]
    Mode = Literal["validation", "serialization"]
    models: dict[tuple[type[BaseModel], Mode], None] = {(ErrorBody, "serialization"): None}
    for entry in listed:
        op = entry.operation
        assert op is not None
        if op.body is not None:
            models[(op.body, "validation")] = None
        for model in op.responses.values():
            if model is not None:
                models[(model, "serialization")] = None
    refs, definitions = models_json_schema(
        list(models), ref_template="#/components/schemas/{model}"
    )
    schemas = dict(definitions.get("$defs", {}))

    def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Any:
        return refs[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    for entry in listed:
        op = entry.operation
        assert op is not None
        path = _PARAM.sub(r"{\1}", entry.path)
        operation_id = entry.handler.__name__
        if operation_id in ids:
            operation_id = f"{operation_id}_{entry.method.lower()}"
        ids.add(operation_id)
        document: dict[str, Any] = {
            "operationId": operation_id,
            "summary": op.summary,
            "tags": [_tag(path)],
        }
        if op.description:
            document["description"] = op.description
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(path)
        ]
        if op.query is not None:
            query_schema = op.query.model_json_schema(mode="validation")
            required = set(query_schema.get("required", []))
            for name, schema in query_schema.get("properties", {}).items():
                schema = _not_null(schema)
                parameter: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": schema,
                }
                if "description" in schema:
                    parameter["description"] = schema.pop("description")
                parameters.append(parameter)
        if parameters:
            document["parameters"] = parameters
        if op.body is not None:
            document["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        responses: dict[str, Any] = {}
        for status, model in sorted(op.responses.items()):
            answer: dict[str, Any] = {"description": _REASONS.get(status, "Answer")}
            if model is not None:
                answer["content"] = {"application/json": {"schema": ref(model, "serialization")}}
            responses[str(status)] = answer
        by_status: dict[int, list[str]] = {}
        for code in _implied(op, path):
            by_status.setdefault(code.status, []).append(code.value)
        for status, codes in sorted(by_status.items()):
            codes.sort()
            error_schema = {
                "allOf": [
                    ref(ErrorBody, "serialization"),
                    {"type": "object", "properties": {"error": {"enum": codes}}},
                ]
            }
            if str(status) in responses:
                # A status that answers both a result and a refusal (execute's 200 and 400).
                existing = responses[str(status)]["content"]["application/json"]["schema"]
                error_schema = {"anyOf": [existing, error_schema]}
            responses[str(status)] = {
                "description": f"{_REASONS.get(status, 'Error')}: {', '.join(codes)}",
                "content": {"application/json": {"schema": error_schema}},
            }
        document["responses"] = responses
        if op.authenticated:
            document["security"] = [{"bearer": []}]
        else:
            document["security"] = []
        paths.setdefault(path, {})[entry.method.lower()] = document
    _link(paths, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "treadle",
            "version": __version__,
            "description": (
                "The REST API of treadle, a self-hosted MCP gateway. Every request carries an "
                "API key as `Authorization: Bearer tk_...` (treadle init or treadle keys "
                'create). Refusals answer `{"error": CODE, "message": ...}` with the codes '
                "listed per operation."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (tk_...)",
                }
            },
        },
    }


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: absent stands for None, so no `null` branch, no title."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "default")}
    branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    return schema


def _link(paths: dict[str, dict[str, Any]], schemas: dict[str, Any]) -> None:
    """OpenAPI links from each create (POST answering 201 with a resource that has an `id`) to
    the operations on that resource's own path, for clients and for stateful testing."""
    for path, methods in paths.items():
        created = methods.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        pointer = _id_pointer(created["content"]["application/json"]["schema"], schemas)
        if pointer is None:
            continue
        links: dict[str, Any] = {}
        for other, other_methods in paths.items():
            match = re.fullmatch(re.escape(path) + r"/{([A-Za-z_0-9]+)}(/[a-z-]+)?", other)
            if match is None:
                continue
            for target in other_methods.values():
                links[target["operationId"]] = {
                    "operationId": target["operationId"],
                    "parameters": {match.group(1): f"$response.body#{pointer}"},
                }
        if links:
            created["links"] = links


def _id_pointer(schema: dict[str, Any], schemas: dict[str, Any]) -> str | None:
    envelope = _resolve(schema, schemas)
    for name, prop in envelope.get("properties", {}).items():
        if "id" in _resolve(prop, schemas).get("properties", {}):
            return f"/{name}/id"
    return None


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        resolved = schemas.get(ref.rsplit("/", 1)[-1], {})
        return resolved if isinstance(resolved, dict) else {}
    return schema
