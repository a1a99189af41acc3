"""The built-in HTTP integration: one generic action that calls any HTTP API.

Redirects are followed here, hop by hop, rather than by the client: every hop then opens its
connection through the outbound guard, so a public URL cannot redirect the gateway into the
internal network.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from treadle.catalog.model import (
    Action,
    ActionAnnotations,
    ActionContext,
    AuthKind,
    Integration,
    JSONObject,
)
from treadle.errors import ActionRuntimeError
from treadle.net import allow_private_network

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 120
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
HARD_MAX_RESPONSE_BYTES = 10 * 1024 * 1024

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# httpx2 computes message framing from the body; a caller-supplied value would contradict it.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
# Credentials meant for one origin must not be handed to the next one a redirect names.
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
_BODY_HEADERS = ("content-type", "content-encoding")

INPUT_SCHEMA: JSONObject = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "method": {
            "type": "string",
            "enum": list(METHODS),
            "default": "GET",
            "description": "HTTP method, upper case. Defaults to GET.",
        },
        "url": {
            "type": "string",
            "format": "uri",
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
            "maxLength": 8192,
            "description": (
                "Absolute http:// or https:// URL to call. Query parameters may be written "
                "here or given separately in `query`."
            ),
        },
        "headers": {
            "type": "object",
            "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
            "additionalProperties": {"type": "string", "pattern": "^[\\t\\x20-\\x7e]*$"},
            "description": (
                "Request headers as name -> value (printable ASCII). Content-Type is set for "
                "you when `json` or `body` is given; Content-Length and Transfer-Encoding are "
                "computed and may not be set. Authorization and Cookie headers are dropped if "
                "a redirect leads to a different origin."
            ),
        },
        "query": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
            "description": (
                "Query-string parameters appended to the URL's own; booleans are sent as "
                "true/false."
            ),
        },
        "json": {
            "description": (
                "Request body as any JSON value, sent with Content-Type: application/json. "
                "Cannot be combined with `body`."
            ),
        },
        "body": {
            "type": "string",
            "description": (
                "Raw text request body, sent UTF-8 encoded with Content-Type "
                "text/plain; charset=utf-8 unless `headers` sets another. Cannot be combined "
                "with `json`."
            ),
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMEOUT,
            "default": DEFAULT_TIMEOUT,
            "description": (
                f"Time limit in seconds for the whole call, redirects and reading the response "
                f"included. At most {MAX_TIMEOUT}; defaults to {DEFAULT_TIMEOUT:g}."
            ),
        },
        "followRedirects": {
            "type": "boolean",
            "default": True,
            "description": (
                f"Follow 3xx redirects (at most {MAX_REDIRECTS}), as a browser does: 301/302 "
                "turn POST into GET and 303 turns any method but HEAD into GET, dropping the "
                "body; 307/308 repeat the method and body. If false, the 3xx response is "
                "returned and its `location` header names the target. Defaults to true."
            ),
        },
    },
    "not": {"required": ["json", "body"]},
}

OUTPUT_SCHEMA: JSONObject = {
    "type": "object",
    "required": ["status", "headers", "body", "truncated", "url"],
    "properties": {
        "status": {
            "type": "integer",
            "description": "HTTP status code; error statuses are returned, not raised.",
        },
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Response headers, names lower-cased, repeated headers joined by ', '.",
        },
        "body": {
            "description": (
                "Parsed JSON when the response is JSON and parses; otherwise the body as text."
            ),
        },
        "truncated": {
            "type": "boolean",
            "description": "True when the body exceeded the size limit and was cut off.",
        },
        "url": {"type": "string", "description": "URL of the final response, after redirects."},
    },
}

SETTINGS_SCHEMA: JSONObject = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "allowPrivateNetwork": {
            "type": "boolean",
            "default": False,
            "description": (
                "Allow requests to loopback, private, link-local and other non-public "
                "addresses. Leave off unless this workspace must reach internal services."
            ),
        },
        "maxResponseBytes": {
            "type": "integer",
            "minimum": 1,
            "maximum": HARD_MAX_RESPONSE_BYTES,
            "default": DEFAULT_MAX_RESPONSE_BYTES,
            "description": "Response bodies longer than this are truncated.",
        },
    },
}

_INPUT_VALIDATOR = Draft202012Validator(INPUT_SCHEMA)


@dataclass(frozen=True, slots=True)
class _Hop:
    """One request of the redirect chain."""

    method: str
    url: httpx2.URL
    headers: httpx2.Headers
    content: bytes | None


async def send_request(ctx: ActionContext, args: JSONObject) -> JSONObject:
    _check_input(args)
    hop = _first_hop(args)
    timeout = float(args.get("timeout", DEFAULT_TIMEOUT))
    follow = args.get("followRedirects", True) is True
    limit = _max_response_bytes(ctx.settings)
    with allow_private_network(ctx.settings.get("allowPrivateNetwork") is True):
        try:
            # The per-operation timeouts of httpx2 alone would let a server that trickles bytes
            # hold the call open indefinitely; this bounds the whole exchange.
            with anyio.fail_after(timeout):
                return await _exchange(
                    ctx.http, hop, follow=follow, io_timeout=timeout, limit=limit
                )
        except TimeoutError:
            raise ActionRuntimeError(
                f"request did not complete within {timeout:g} seconds", reason="timeout"
            ) from None


async def _exchange(
    client: httpx2.AsyncClient, hop: _Hop, *, follow: bool, io_timeout: float, limit: int
) -> JSONObject:
    for _ in range(MAX_REDIRECTS + 1):
        with _failures(hop.url.host):
            request = client.build_request(
                hop.method, hop.url, headers=hop.headers, content=hop.content, timeout=io_timeout
            )
            response = await client.send(request, stream=True)
            try:
                location = _redirect_location(response) if follow else None
                if location is None:
                    return await _read(response, limit)
            finally:
                await response.aclose()
        hop = _redirected(hop, response.status_code, location)
    raise ActionRuntimeError(
        f"more than {MAX_REDIRECTS} redirects, last to {hop.url.host}",
        reason="too_many_redirects",
        host=hop.url.host,
    )


@contextmanager
def _failures(host: str) -> Iterator[None]:
    """Turns transport errors into action failures naming only the host.

    Exception texts are not reused: they can quote request headers or the full URL. The guard's
    `BlockedDestination` is already an action failure and passes through untouched.
    """
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise ActionRuntimeError(
            f"request to {host} timed out", reason="timeout", host=host
        ) from exc
    except httpx2.ConnectError as exc:
        raise ActionRuntimeError(
            f"could not connect to {host}", reason="connect_failed", host=host
        ) from exc
    except (httpx2.UnsupportedProtocol, httpx2.InvalidURL) as exc:
        raise ActionRuntimeError(
            f"cannot send a request to {host}: unsupported URL", reason="invalid_url", host=host
        ) from exc
    except httpx2.HTTPError as exc:
        raise ActionRuntimeError(
            f"request to {host} failed ({type(exc).__name__})", reason="request_failed", host=host
        ) from exc


def _check_input(args: JSONObject) -> None:
    error = best_match(_INPUT_VALIDATOR.iter_errors(args))
    if error is not None:
        field = "/".join(str(part) for part in error.absolute_path)
        raise ActionRuntimeError(
            _describe(error.validator, error.validator_value, field, args),
            reason="invalid_url" if field == "url" else "invalid_input",
            field=field,
        )
    for name in args.get("headers", {}):
        if name.lower() in _FRAMING_HEADERS:
            raise ActionRuntimeError(
                f"header {name} is computed and may not be set",
                reason="invalid_input",
                field=f"headers/{name}",
            )


def _describe(validator: str, expected: Any, field: str, args: JSONObject) -> str:
    """A validation message built from the schema alone: jsonschema's own messages quote the
    offending value, which may be a secret header or query value."""
    if validator == "not":
        return "give either 'json' or 'body', not both"
    if validator == "required":
        return "'url' is required"
    if validator == "additionalProperties" and not field:
        unknown = sorted(set(args) - set(INPUT_SCHEMA["properties"]))
        return f"unknown input field(s): {', '.join(unknown)}"
    return f"'{field or 'input'}' fails {validator} {expected!r}"


def _first_hop(args: JSONObject) -> _Hop:
    try:
        url = httpx2.URL(args["url"])
    except httpx2.InvalidURL:
        raise ActionRuntimeError(
            "url is not a valid URL", reason="invalid_url", field="url"
        ) from None
    if not _is_http_target(url):
        raise ActionRuntimeError(
            "url must be an absolute http or https URL", reason="invalid_url", field="url"
        )
    if args.get("query"):
        url = url.copy_merge_params(args["query"])
    headers = httpx2.Headers(args.get("headers", {}))
    content: bytes | None = None
    if "json" in args:
        content = json.dumps(args["json"], ensure_ascii=False).encode("utf-8")
        headers.setdefault("content-type", "application/json")
    elif "body" in args:
        content = args["body"].encode("utf-8")
        headers.setdefault("content-type", "text/plain; charset=utf-8")
    return _Hop(args.get("method", "GET"), url, headers, content)


def _redirect_location(response: httpx2.Response) -> str | None:
    if response.status_code not in _REDIRECT_STATUSES:
        return None
    return response.headers.get("location")


def _redirected(hop: _Hop, status: int, location: str) -> _Hop:
    try:
        url = hop.url.join(location)
    except httpx2.InvalidURL:
        raise ActionRuntimeError(
            f"{hop.url.host} redirected to an invalid URL", reason="invalid_url", host=hop.url.host
        ) from None
    if not _is_http_target(url):
        raise ActionRuntimeError(
            f"{hop.url.host} redirected to a non-HTTP URL", reason="invalid_url", host=hop.url.host
        )
    method, content, headers = hop.method, hop.content, hop.headers.copy()
    # The fetch standard's rules, which every browser follows.
    if (status in (301, 302) and method == "POST") or (
        status == 303 and method not in ("GET", "HEAD")
    ):
        method, content = "GET", None
        for name in _BODY_HEADERS:
            headers.pop(name, None)
    if _origin(url) != _origin(hop.url):
        for name in _CREDENTIAL_HEADERS:
            headers.pop(name, None)
    return _Hop(method, url, headers, content)


def _is_http_target(url: httpx2.URL) -> bool:
    # The URL parser accepts any port number; the socket layer would crash on one over 65535.
    port_ok = url.port is None or 0 < url.port <= 65535
    return url.scheme in ("http", "https") and bool(url.host) and port_ok


def _origin(url: httpx2.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


async def _read(response: httpx2.Response, limit: int) -> JSONObject:
    chunks: list[bytes] = []
    size = 0
    truncated = False
    async for chunk in response.aiter_bytes():
        room = limit - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    return {
        "status": response.status_code,
        "headers": {name.lower(): value for name, value in response.headers.items()},
        "body": _decode(b"".join(chunks), response),
        "truncated": truncated,
        "url": str(response.url),
    }


def _decode(content: bytes, response: httpx2.Response) -> Any:
    text = content.decode(_charset(response), errors="replace")
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    return text


def _charset(response: httpx2.Response) -> str:
    charset = response.charset_encoding
    if charset is not None:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"


def _max_response_bytes(settings: Mapping[str, Any]) -> int:
    value = settings.get("maxResponseBytes", DEFAULT_MAX_RESPONSE_BYTES)
    if isinstance(value, bool) or not isinstance(value, int):
        return DEFAULT_MAX_RESPONSE_BYTES
    return min(max(value, 1), HARD_MAX_RESPONSE_BYTES)


integration = Integration(
    name="http",
    display_name="HTTP",
    description=(
        "Call any HTTP API: send a request with a method, headers, query and body, get back "
        "the status, headers and body."
    ),
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            name="send_request",
            display_name="Send HTTP request",
            description=(
                "Send one HTTP request and return the response's status, headers and body. "
                "Error statuses (4xx/5xx) are returned normally: check `status`. JSON "
                "responses are parsed; other bodies come back as text, cut off at the "
                "workspace's size limit (then `truncated` is true). Requests to private or "
                "internal addresses are refused unless the workspace allows them."
            ),
            input_schema=INPUT_SCHEMA,
            output_schema=OUTPUT_SCHEMA,
            run=send_request,
            annotations=ActionAnnotations(
                read_only=False, destructive=True, idempotent=False, open_world=True
            ),
        ),
    ),
    settings_schema=SETTINGS_SCHEMA,
)
