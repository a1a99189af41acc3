"""The built-in `http.send_request` action against a real loopback server."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from treadle.catalog.builtin.http import integration
from treadle.catalog.model import Action, ActionAnnotations, ActionContext, AuthKind, JSONObject
from treadle.errors import ActionRuntimeError
from treadle.net import AddressPredicate, build_http_client

from loopback import serve
from offline_net import FakeDNS, SocketRecorder, recording_sockets

PRIVATE = {"allowPrivateNetwork": True}
SECRET = "sk-live-0123456789abcdef"
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class Upstream:
    port: int = 0
    # What /hang waits on: set only once the test that sent the request is over.
    release: anyio.Event = field(default_factory=anyio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def release_hung_requests(self) -> None:
        self.release.set()
        self.release = anyio.Event()


def build_app(upstream: Upstream) -> Starlette:
    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": sorted(request.query_params.multi_items()),
                "headers": dict(request.headers),
                "body": (await request.body()).decode(),
            }
        )

    async def text(request: Request) -> Response:
        return Response("héllo wörld".encode("latin-1"), media_type="text/plain; charset=latin-1")

    async def broken_json(request: Request) -> Response:
        return Response(b'{"unterminated": ', media_type="application/json")

    async def big(request: Request) -> Response:
        return PlainTextResponse("a" * int(request.query_params["size"]))

    async def status(request: Request) -> Response:
        return JSONResponse({"error": "nope"}, status_code=int(request.path_params["code"]))

    async def redirect(request: Request) -> Response:
        code = int(request.query_params.get("status", "302"))
        return RedirectResponse(request.query_params["to"], status_code=code)

    async def loop(request: Request) -> Response:
        return RedirectResponse("/loop", status_code=302)

    async def hang(request: Request) -> Response:
        await upstream.release.wait()
        return PlainTextResponse("late")

    return Starlette(
        routes=[
            Route("/echo", echo, methods=ALL_METHODS),
            Route("/text", text),
            Route("/broken-json", broken_json),
            Route("/big", big),
            Route("/status/{code:int}", status),
            Route("/redirect", redirect, methods=ALL_METHODS),
            Route("/loop", loop),
            Route("/hang", hang),
        ]
    )


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream()
    async with serve(build_app(upstream)) as port:
        upstream.port = port
        yield upstream


@pytest.fixture
async def hang_url(upstream: Upstream) -> AsyncIterator[str]:
    """A URL whose handler never answers while the test runs."""
    yield upstream.url("/hang")
    upstream.release_hung_requests()


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """The guard's lookups answered from a table: no query leaves the machine."""
    fake = FakeDNS(
        table={
            "localhost": ["127.0.0.1", "::1"],
            "localhost.": ["127.0.0.1", "::1"],
            "metadata.google.internal": ["169.254.169.254"],
            "internal.test": ["10.0.0.5"],
            "localtest.me": ["127.0.0.1"],
            "mixed.test": ["93.184.216.34", "10.0.0.5"],
            "mapped.test": ["::ffff:169.254.169.254"],
            "v6-internal.test": ["fd12:3456::1"],
        }
    )
    monkeypatch.setattr(anyio, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture(autouse=True)
def sockets() -> Iterator[SocketRecorder]:
    """Every socket a test opens, kept on loopback: a test that would leave it fails."""
    with recording_sockets() as recorder:
        yield recorder
    assert recorder.refused == []


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with build_http_client() as client:
        yield client


def send_request() -> Action:
    action = integration.action("send_request")
    assert action is not None
    return action


async def run(client: httpx2.AsyncClient, args: JSONObject, settings: JSONObject) -> Any:
    ctx = ActionContext(
        workspace_id="ws_test",
        integration_alias="http",
        action_name="send_request",
        end_user_id=None,
        connection=None,
        settings=settings,
        http=client,
    )
    return await send_request().run(ctx, args)


async def failure(
    client: httpx2.AsyncClient, args: JSONObject, settings: JSONObject
) -> ActionRuntimeError:
    with pytest.raises(ActionRuntimeError) as failed:
        await run(client, args, settings)
    return failed.value


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_integration_declaration() -> None:
    assert integration.name == "http"
    assert integration.auth_kind is AuthKind.NONE
    assert integration.action_names == ("send_request",)
    action = send_request()
    assert action.input_schema["additionalProperties"] is False
    assert action.input_schema["required"] == ["url"]
    assert all("description" in prop for prop in action.input_schema["properties"].values())
    assert action.annotations == ActionAnnotations(
        read_only=False, destructive=True, idempotent=False, open_world=True
    )
    settings = integration.settings_schema
    assert settings["additionalProperties"] is False
    assert settings["properties"]["maxResponseBytes"]["maximum"] == 10 * 1024 * 1024


@pytest.mark.anyio
async def test_get_with_query_and_headers(client: httpx2.AsyncClient, upstream: Upstream) -> None:
    out = await run(
        client,
        {
            "url": upstream.url("/echo?fixed=1"),
            "query": {"q": "a b", "n": 2, "flag": True},
            "headers": {"X-Custom": "yes"},
        },
        PRIVATE,
    )
    assert out["status"] == 200
    assert out["truncated"] is False
    assert out["headers"]["content-type"] == "application/json"
    assert out["url"].startswith(upstream.url("/echo?"))
    body = out["body"]
    assert body["method"] == "GET"
    assert body["query"] == [["fixed", "1"], ["flag", "true"], ["n", "2"], ["q", "a b"]]
    assert body["headers"]["x-custom"] == "yes"


@pytest.mark.anyio
async def test_post_json_round_trip(client: httpx2.AsyncClient, upstream: Upstream) -> None:
    payload = {"name": "zoë", "items": [1, 2.5, None, True]}
    out = await run(
        client, {"method": "POST", "url": upstream.url("/echo"), "json": payload}, PRIVATE
    )
    assert out["body"]["method"] == "POST"
    assert out["body"]["headers"]["content-type"] == "application/json"
    assert httpx2.Response(200, content=out["body"]["body"].encode()).json() == payload


@pytest.mark.anyio
async def test_put_text_body(client: httpx2.AsyncClient, upstream: Upstream) -> None:
    out = await run(
        client, {"method": "PUT", "url": upstream.url("/echo"), "body": "plain ✓"}, PRIVATE
    )
    assert out["body"]["body"] == "plain ✓"
    assert out["body"]["headers"]["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.anyio
async def test_text_response_decoded_with_its_charset(
    client: httpx2.AsyncClient, upstream: Upstream
) -> None:
    out = await run(client, {"url": upstream.url("/text")}, PRIVATE)
    assert out["body"] == "héllo wörld"


@pytest.mark.anyio
async def test_unparseable_json_returned_as_text(
    client: httpx2.AsyncClient, upstream: Upstream
) -> None:
    out = await run(client, {"url": upstream.url("/broken-json")}, PRIVATE)
    assert out["body"] == '{"unterminated": '


@pytest.mark.anyio
async def test_head(client: httpx2.AsyncClient, upstream: Upstream) -> None:
    out = await run(client, {"method": "HEAD", "url": upstream.url("/echo")}, PRIVATE)
    assert out["status"] == 200
    assert out["body"] == ""
    assert out["headers"]["content-type"] == "application/json"


@pytest.mark.anyio
async def test_error_status_is_output_not_failure(
    client: httpx2.AsyncClient, upstream: Upstream
) -> None:
    out = await run(client, {"url": upstream.url("/status/503")}, PRIVATE)
    assert out["status"] == 503
    assert out["body"] == {"error": "nope"}


@pytest.mark.anyio
@pytest.mark.parametrize(("size", "truncated"), [(9, False), (10, False), (11, True), (5000, True)])
async def test_response_size_cap(
    client: httpx2.AsyncClient, upstream: Upstream, size: int, truncated: bool
) -> None:
    settings = {**PRIVATE, "maxResponseBytes": 10}
    out = await run(client, {"url": upstream.url(f"/big?size={size}")}, settings)
    assert out["body"] == "a" * min(size, 10)
    assert out["truncated"] is truncated


@pytest.mark.anyio
async def test_timeout(client: httpx2.AsyncClient, hang_url: str) -> None:
    error = await failure(client, {"url": hang_url, "timeout": 0.1}, PRIVATE)
    assert error.details["reason"] == "timeout"


@pytest.mark.anyio
async def test_connection_refused(client: httpx2.AsyncClient) -> None:
    url = f"http://127.0.0.1:{unused_port()}/"
    error = await failure(client, {"url": url}, PRIVATE)
    assert error.details["reason"] == "connect_failed"
    assert error.details["host"] == "127.0.0.1"


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
async def test_loopback_literals_refused_by_default(
    client: httpx2.AsyncClient, upstream: Upstream, host: str
) -> None:
    error = await failure(client, {"url": upstream.url("/echo", host)}, {})
    assert error.details["reason"] == "destination_not_allowed"


@pytest.mark.anyio
async def test_hostname_resolving_to_loopback_refused(
    client: httpx2.AsyncClient, upstream: Upstream
) -> None:
    error = await failure(client, {"url": upstream.url("/echo", "localhost")}, {})
    assert error.details == {"reason": "destination_not_allowed", "host": "localhost"}


@pytest.mark.anyio
async def test_allow_private_network_setting(
    client: httpx2.AsyncClient, upstream: Upstream
) -> None:
    assert (await run(client, {"url": upstream.url("/echo")}, PRIVATE))["status"] == 200
    # Only a literal `true` opens the private network.
    error = await failure(client, {"url": upstream.url("/echo")}, {"allowPrivateNetwork": "yes"})
    assert error.details["reason"] == "destination_not_allowed"


@pytest.mark.anyio
async def test_redirect_to_non_allowed_address_refused(upstream: Upstream) -> None:
    def only_upstream(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return ip == ipaddress.IPv4Address("127.0.0.1")

    predicate: AddressPredicate = only_upstream
    async with build_http_client(is_allowed_address=predicate) as client:
        assert (await run(client, {"url": upstream.url("/echo")}, {}))["status"] == 200
        target = upstream.url("/echo", "127.0.0.2")
        url = str(httpx2.URL(upstream.url("/redirect")).copy_merge_params({"to": target}))
        error = await failure(client, {"url": url}, {})
    assert error.details == {"reason": "destination_not_allowed", "host": "127.0.0.2"}


@pytest.mark.anyio
@pytest.mark.parametrize("port", [0, 65536, 99999999999])
async def test_redirect_to_an_impossible_port_is_an_invalid_url(
    client: httpx2.AsyncClient, upstream: Upstream, port: int
) -> None:
    url = httpx2.URL(upstream.url("/redirect")).copy_merge_params(
        {"to": f"http://127.0.0.1:{port}/echo"}
    )
    error = await failure(client, {"url": str(url)}, PRIVATE)
    assert error.details["reason"] == "invalid_url"


@pytest.mark.anyio
async def test_redirect_loop(client: httpx2.AsyncClient, upstream: Upstream) -> None:
    error = await failure(client, {"url": upstream.url("/loop")}, PRIVATE)
    assert error.details["reason"] == "too_many_redirects"


@pytest.mark.anyio
async def test_303_turns_post_into_get(client: httpx2.AsyncClient, upstream: Upstream) -> None:
    args = {"method": "POST", "url": upstream.url("/redirect?to=/echo&status=303"), "json": [1]}
    out = await run(client, args, PRIVATE)
    assert out["url"] == upstream.url("/echo")
    assert out["body"]["method"] == "GET"
    assert out["body"]["body"] == ""
    assert "content-type" not in out["body"]["headers"]


@pytest.mark.anyio
async def test_307_keeps_method_and_body(client: httpx2.AsyncClient, upstream: Upstream) -> None:
    args = {"method": "PATCH", "url": upstream.url("/redirect?to=/echo&status=307"), "body": "x"}
    out = await run(client, args, PRIVATE)
    assert out["body"]["method"] == "PATCH"
    assert out["body"]["body"] == "x"


@pytest.mark.anyio
async def test_redirect_not_followed_when_disabled(
    client: httpx2.AsyncClient, upstream: Upstream
) -> None:
    args = {"url": upstream.url("/redirect?to=/echo"), "followRedirects": False}
    out = await run(client, args, PRIVATE)
    assert out["status"] == 302
    assert out["headers"]["location"] == "/echo"


@pytest.mark.anyio
async def test_cross_origin_redirect_drops_credentials(
    client: httpx2.AsyncClient, upstream: Upstream
) -> None:
    target = upstream.url("/echo", "localhost")
    url = str(httpx2.URL(upstream.url("/redirect")).copy_merge_params({"to": target}))
    headers = {"Authorization": f"Bearer {SECRET}", "X-Trace": "t1"}
    out = await run(client, {"url": url, "headers": headers}, PRIVATE)
    assert out["url"] == target
    assert "authorization" not in out["body"]["headers"]
    assert out["body"]["headers"]["x-trace"] == "t1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"url": "http://127.0.0.1/", "json": {}, "body": ""}, "invalid_input"),
        ({"url": "http://127.0.0.1/", "method": "TRACE"}, "invalid_input"),
        ({"url": "http://127.0.0.1/", "timeout": 0}, "invalid_input"),
        ({"url": "http://127.0.0.1/", "timeout": 121}, "invalid_input"),
        ({"url": "http://127.0.0.1/", "extra": 1}, "invalid_input"),
        ({"url": "http://127.0.0.1/", "headers": {"Content-Length": "1"}}, "invalid_input"),
        ({"url": "http://127.0.0.1/", "headers": {"X": "a\r\nb"}}, "invalid_input"),
        ({"url": "http://127.0.0.1/", "query": {"a": None}}, "invalid_input"),
        ({}, "invalid_input"),
        ({"url": "ftp://127.0.0.1/"}, "invalid_url"),
        ({"url": "not a url"}, "invalid_url"),
        ({"url": "http://"}, "invalid_url"),
        ({"url": "http://[::1/"}, "invalid_url"),
        ({"url": "http://127.0.0.1:0/"}, "invalid_url"),
        ({"url": "http://127.0.0.1:65536/"}, "invalid_url"),
        ({"url": "http://127.0.0.1:99999999999/"}, "invalid_url"),
    ],
)
async def test_invalid_input(client: httpx2.AsyncClient, args: JSONObject, reason: str) -> None:
    error = await failure(client, args, PRIVATE)
    assert error.details["reason"] == reason


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "extra", "settings"),
    [
        pytest.param("http://127.0.0.1:{port}/echo", {}, {}, id="refused destination"),
        pytest.param("http://127.0.0.1:{unused}/", {}, PRIVATE, id="connection refused"),
        pytest.param("{hang}", {"timeout": 0.05}, PRIVATE, id="timeout"),
        pytest.param("http://127.0.0.1:{port}/loop", {}, PRIVATE, id="redirect loop"),
        pytest.param("http://127.0.0.1:{port}/echo", {"body": "", "json": 1}, {}, id="bad input"),
        pytest.param(
            "http://127.0.0.1:{port}/echo",
            {"headers": {"X-Api-Key": f"{SECRET}\n"}},
            PRIVATE,
            id="bad header value",
        ),
    ],
)
async def test_errors_never_quote_header_or_query_values(
    client: httpx2.AsyncClient,
    upstream: Upstream,
    hang_url: str,
    url: str,
    extra: JSONObject,
    settings: JSONObject,
) -> None:
    args = {
        "url": url.format(port=upstream.port, unused=unused_port(), hang=hang_url),
        "headers": {"X-Api-Key": SECRET, "Authorization": f"Bearer {SECRET}"},
        "query": {"token": SECRET},
        **extra,
    }
    error = await failure(client, args, settings)
    assert SECRET not in str(error)
    assert SECRET not in error.message
    assert SECRET not in repr(error.details)


# -- SSRF: every form of an internal destination, refused before any socket is opened ---------

SSRF_URLS = [
    ("http://127.0.0.1/", "destination_not_allowed"),
    ("HTTP://127.0.0.1:6379/", "destination_not_allowed"),
    ("https://127.0.0.1/", "destination_not_allowed"),
    ("http://127.1/", "destination_not_allowed"),
    ("http://0x7f.1/", "destination_not_allowed"),
    ("http://0x7f.0x0.0x0.0x1/", "destination_not_allowed"),
    ("http://2130706433/", "destination_not_allowed"),
    ("http://017700000001/", "destination_not_allowed"),
    ("http://0/", "destination_not_allowed"),
    ("http://0.0.0.0:8400/", "destination_not_allowed"),
    ("http://10.0.0.1/", "destination_not_allowed"),
    ("http://10.1/", "destination_not_allowed"),
    ("http://172.16.0.1/", "destination_not_allowed"),
    ("http://192.168.1.1/", "destination_not_allowed"),
    ("http://100.64.0.1/", "destination_not_allowed"),
    ("http://169.254.169.254/latest/meta-data/", "destination_not_allowed"),
    ("http://0xa9fea9fe/", "destination_not_allowed"),
    ("http://2852039166/", "destination_not_allowed"),
    ("http://224.0.0.1/", "destination_not_allowed"),
    ("http://255.255.255.255/", "destination_not_allowed"),
    ("http://198.18.0.1/", "destination_not_allowed"),
    ("http://[::1]/", "destination_not_allowed"),
    ("http://[::1]:8400/", "destination_not_allowed"),
    ("http://[0:0:0:0:0:0:0:1]/", "destination_not_allowed"),
    ("http://[::]/", "destination_not_allowed"),
    ("http://[::ffff:127.0.0.1]/", "destination_not_allowed"),
    ("http://[::ffff:7f00:1]/", "destination_not_allowed"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "destination_not_allowed"),
    ("http://[::ffff:a9fe:a9fe]/", "destination_not_allowed"),
    ("http://[::127.0.0.1]/", "destination_not_allowed"),
    ("http://[64:ff9b::a9fe:a9fe]/", "destination_not_allowed"),
    ("http://[2002:a9fe:a9fe::]/", "destination_not_allowed"),
    ("http://[fe80::1]/", "destination_not_allowed"),
    ("http://[fe80::1%25eth0]/", "destination_not_allowed"),
    ("http://[fd00:ec2::254]/", "destination_not_allowed"),
    ("http://localhost/", "destination_not_allowed"),
    ("http://LOCALHOST:22/", "destination_not_allowed"),
    ("http://localhost./", "destination_not_allowed"),
    ("http://localtest.me/", "destination_not_allowed"),
    ("http://metadata.google.internal/computeMetadata/v1/", "destination_not_allowed"),
    ("http://internal.test/", "destination_not_allowed"),
    ("http://mixed.test/", "destination_not_allowed"),
    ("http://mapped.test/", "destination_not_allowed"),
    ("http://v6-internal.test/", "destination_not_allowed"),
    ("http://user:pass@127.0.0.1/", "destination_not_allowed"),
    ("http://public.test@127.0.0.1/", "destination_not_allowed"),
    ("http://127.0.0.1#@public.test/", "destination_not_allowed"),
    ("http://127.0.0.1?@public.test/", "destination_not_allowed"),
    # The host here is the unresolvable name after the `@`: nothing to connect to.
    ("http://127.0.0.1:80@unknown.test/", "connect_failed"),
    ("http://%31%32%37.0.0.1/", "connect_failed"),
    ("http://0177.0.0.1/", "invalid_url"),
    ("http://127.000.000.001/", "invalid_url"),
    ("http://①②⑦.0.0.1/", "invalid_url"),
    ("http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", "invalid_url"),
    ("http://127.0.0.1:65536/", "invalid_url"),
    ("http:///127.0.0.1/", "invalid_url"),
    ("http:\\\\127.0.0.1\\", "invalid_url"),
    ("//127.0.0.1/", "invalid_url"),
    ("file:///etc/passwd", "invalid_url"),
    ("gopher://127.0.0.1:70/_stats", "invalid_url"),
    ("dict://127.0.0.1:11211/stats", "invalid_url"),
    ("ftp://127.0.0.1/", "invalid_url"),
    ("ws://127.0.0.1/", "invalid_url"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("url", "reason"), SSRF_URLS)
async def test_internal_destinations_are_refused_without_opening_a_socket(
    client: httpx2.AsyncClient, sockets: SocketRecorder, url: str, reason: str
) -> None:
    error = await failure(client, {"url": url}, {})
    assert error.details["reason"] == reason, error.details
    assert sockets.connects == []


REDIRECT_TARGETS = [
    "http://127.0.0.2/",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0x7f.2/",
    "http://[::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://localhost/",
    "http://metadata.google.internal/",
    "http://mixed.test/",
]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", REDIRECT_TARGETS)
async def test_redirects_to_internal_destinations_are_refused_at_each_hop(
    upstream: Upstream, sockets: SocketRecorder, status: int, target: str
) -> None:
    """The upstream itself counts as public here; only where it redirects to is internal."""

    def only_upstream(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return ip == ipaddress.IPv4Address("127.0.0.1")

    async with build_http_client(is_allowed_address=only_upstream) as client:
        url = httpx2.URL(upstream.url("/redirect")).copy_merge_params(
            {"to": target, "status": str(status)}
        )
        error = await failure(client, {"url": str(url)}, {})
    assert error.details["reason"] == "destination_not_allowed", error.details
    assert set(sockets.connects) == {"127.0.0.1"}
