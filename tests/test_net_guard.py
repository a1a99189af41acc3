"""The outbound-address guard, exercised through the shared client against a loopback server."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

import anyio
import httpcore2
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from treadle.errors import TreadleError
from treadle.net import (
    BlockedDestination,
    GuardedNetworkBackend,
    allow_private_network,
    build_http_client,
    is_public_address,
    private_network_allowed,
)

from loopback import serve
from offline_net import FakeDNS, SocketRecorder, recording_sockets


async def echo(request: Request) -> Response:
    assert request.client is not None
    return JSONResponse(
        {
            "host": request.headers["host"],
            "peer": request.client.host,
            "cookie": request.headers.get("cookie"),
        }
    )


async def set_cookie(request: Request) -> Response:
    response = PlainTextResponse("ok")
    response.set_cookie("session", "tenant-a")
    return response


async def redirect(request: Request) -> Response:
    return RedirectResponse("/echo", status_code=302)


APP = Starlette(
    routes=[
        Route("/echo", echo),
        Route("/set-cookie", set_cookie),
        Route("/redirect", redirect),
    ]
)


@pytest.fixture(scope="module")
async def port() -> AsyncIterator[int]:
    async with serve(APP) as port:
        yield port


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with build_http_client() as client:
        yield client


def only_127_0_0_1(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A predicate under which the test server's address counts as public and nothing else."""
    return ip == ipaddress.IPv4Address("127.0.0.1")


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Answers the guard's lookups from a table, so no query leaves the machine."""
    fake = FakeDNS(table={"localhost": ["127.0.0.1", "::1"]})
    monkeypatch.setattr(anyio, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture(autouse=True)
def sockets() -> Iterator[SocketRecorder]:
    """Every socket a test opens, kept on loopback: a test that would leave it fails."""
    with recording_sockets() as recorder:
        yield recorder
    assert recorder.refused == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700::1", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("2002:808:808::1", True),  # 6to4 of a public address
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("127.0.0.1", False),
        ("127.255.255.254", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("0.1.2.3", False),
        ("255.255.255.255", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("240.0.0.1", False),
        ("192.0.0.1", False),
        ("192.0.2.1", False),
        ("198.18.0.1", False),
        ("198.51.100.1", False),
        ("203.0.113.1", False),
        ("192.88.99.1", False),
        ("::", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:0:10.0.0.1", False),  # IPv4-translated
        ("::10.0.0.1", False),  # IPv4-compatible
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::1", False),  # local-use NAT64
        ("2001::1", False),  # Teredo
        ("2001:db8::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("ff02::1", False),
        ("100::1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_private_network_flag_defaults_off_and_nests() -> None:
    assert private_network_allowed() is False
    with allow_private_network(True):
        assert private_network_allowed() is True
        with allow_private_network(False):
            assert private_network_allowed() is False
        assert private_network_allowed() is True
    assert private_network_allowed() is False


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "reported"),
    [
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("0.0.0.0", "0.0.0.0"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
    ],
)
async def test_non_public_destinations_are_refused_by_default(
    client: httpx2.AsyncClient, port: int, host: str, reported: str
) -> None:
    with pytest.raises(BlockedDestination) as refused:
        await client.get(f"http://{host}:{port}/echo")
    assert isinstance(refused.value, TreadleError)
    assert refused.value.host == reported
    assert refused.value.details == {"reason": "destination_not_allowed", "host": reported}


@pytest.mark.anyio
async def test_allow_private_network_lets_the_call_through(
    client: httpx2.AsyncClient, port: int
) -> None:
    with allow_private_network(True):
        response = await client.get(f"http://127.0.0.1:{port}/echo")
    assert response.status_code == 200


@pytest.mark.anyio
async def test_injected_predicate_decides_what_is_public(port: int) -> None:
    async with build_http_client(is_allowed_address=only_127_0_0_1) as client:
        assert (await client.get(f"http://127.0.0.1:{port}/echo")).status_code == 200
        with pytest.raises(BlockedDestination):
            await client.get(f"http://127.0.0.2:{port}/echo")


@pytest.mark.anyio
async def test_one_non_public_resolution_refuses_the_host(port: int, dns: FakeDNS) -> None:
    dns.table["mixed.test"] = ["127.0.0.1", "127.0.0.2"]
    async with build_http_client(is_allowed_address=only_127_0_0_1) as client:
        with pytest.raises(BlockedDestination) as refused:
            await client.get(f"http://mixed.test:{port}/echo")
    assert refused.value.host == "mixed.test"


@pytest.mark.anyio
async def test_connects_to_the_checked_address_and_keeps_the_host_name(
    port: int, dns: FakeDNS
) -> None:
    dns.table["api.test"] = ["127.0.0.1"]
    async with build_http_client(is_allowed_address=only_127_0_0_1) as client:
        response = await client.get(f"http://api.test:{port}/echo")
    assert response.json()["host"] == f"api.test:{port}"
    assert response.json()["peer"] == "127.0.0.1"
    # Resolved once, by the guard: nothing re-resolves the name after the check.
    assert dns.lookups == ["api.test"]


@pytest.mark.anyio
async def test_unresolvable_host_is_a_connect_error(
    client: httpx2.AsyncClient, port: int, dns: FakeDNS
) -> None:
    with pytest.raises(httpx2.ConnectError):
        await client.get(f"http://nowhere.test:{port}/echo")


@pytest.mark.anyio
async def test_connection_opened_while_allowed_is_not_reused_when_not(
    client: httpx2.AsyncClient, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/echo"
    with allow_private_network(True):
        assert (await client.get(url)).status_code == 200
    with pytest.raises(BlockedDestination):
        await client.get(url)


@pytest.mark.anyio
async def test_shared_client_never_replays_cookies(client: httpx2.AsyncClient, port: int) -> None:
    with allow_private_network(True):
        first = await client.get(f"http://127.0.0.1:{port}/set-cookie")
        second = await client.get(f"http://127.0.0.1:{port}/echo")
    assert "set-cookie" in first.headers
    assert second.json()["cookie"] is None


@pytest.mark.anyio
async def test_shared_client_does_not_follow_redirects(
    client: httpx2.AsyncClient, port: int
) -> None:
    with allow_private_network(True):
        response = await client.get(f"http://127.0.0.1:{port}/redirect")
    assert response.status_code == 302


# -- The guard's own decisions, below any socket: a recording backend stands in for the network


@dataclass
class RecordingBackend(httpcore2.AsyncNetworkBackend):
    """Records where the guard would connect and refuses, so no socket is ever opened."""

    calls: list[str] = field(default_factory=list)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - the httpcore2 interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        self.calls.append(host)
        raise httpcore2.ConnectError("recorded, not connected")

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the guard never sleeps")


PUBLIC = "93.184.216.34"

# Every spelling of an internal address the C resolver accepts, and names that resolve to one.
INTERNAL_HOSTS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "0x7f.0x0.0x0.0x1",
    "0x7f000001",
    "2130706433",
    "017700000001",
    "0",
    "0.0.0.0",
    "10.1",
    "0xa9fea9fe",  # 169.254.169.254
    "2852039166",  # 169.254.169.254
    "169.254.169.254",
    "::1",
    "0:0:0:0:0:0:0:1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "0:0:0:0:0:ffff:127.0.0.1",
    "::ffff:a9fe:a9fe",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "fe80::1%25eth0",
    "fd00:ec2::254",
    "localhost",
    "metadata.google.internal",
    "mixed.test",
    "mapped.test",
    "v6-internal.test",
]
NAMES = {
    "metadata.google.internal": ["169.254.169.254"],
    "mixed.test": [PUBLIC, "10.0.0.5"],  # one internal answer taints the name
    "mapped.test": ["::ffff:10.0.0.5"],
    "v6-internal.test": ["fd12:3456::1"],
}


@pytest.mark.anyio
@pytest.mark.parametrize("host", INTERNAL_HOSTS)
async def test_guard_refuses_every_spelling_of_an_internal_address_before_connecting(
    dns: FakeDNS, host: str
) -> None:
    dns.table.update(NAMES)
    inner = RecordingBackend()
    backend = GuardedNetworkBackend(inner=inner)
    with pytest.raises(BlockedDestination) as refused:
        await backend.connect_tcp(host, 80, timeout=5)
    assert refused.value.host == host
    assert inner.calls == []


@pytest.mark.anyio
async def test_guard_connects_to_the_literal_it_checked_while_the_name_rebinds(
    dns: FakeDNS,
) -> None:
    dns.rebinding["rebind.test"] = iter([[PUBLIC], ["127.0.0.1"], [PUBLIC]])
    inner = RecordingBackend()
    backend = GuardedNetworkBackend(inner=inner)
    with pytest.raises(httpcore2.ConnectError):
        await backend.connect_tcp("rebind.test", 443, timeout=5)
    with pytest.raises(BlockedDestination):
        await backend.connect_tcp("rebind.test", 443, timeout=5)
    # One lookup per connect, and the connect goes to the address that lookup returned:
    # never the name, which the resolver could answer differently a second time.
    assert dns.lookups == ["rebind.test", "rebind.test"]
    assert inner.calls == [PUBLIC]


@pytest.mark.anyio
async def test_guard_tries_each_checked_address_in_resolver_order(dns: FakeDNS) -> None:
    dns.table["multi.test"] = [PUBLIC, "2606:4700::1111"]
    inner = RecordingBackend()
    with pytest.raises(httpcore2.ConnectError):
        await GuardedNetworkBackend(inner=inner).connect_tcp("multi.test", 443, timeout=5)
    assert inner.calls == [PUBLIC, "2606:4700::1111"]


@pytest.mark.anyio
async def test_allowing_private_networks_still_connects_to_the_checked_literal(
    dns: FakeDNS,
) -> None:
    dns.table["internal.test"] = ["10.0.0.5"]
    inner = RecordingBackend()
    with allow_private_network(True), pytest.raises(httpcore2.ConnectError):
        await GuardedNetworkBackend(inner=inner).connect_tcp("internal.test", 80, timeout=5)
    assert inner.calls == ["10.0.0.5"]


def test_socket_recorder_refuses_a_connect_that_would_leave_loopback() -> None:
    with recording_sockets() as recorder, socket.socket() as sock:
        with pytest.raises(OSError, match="test refused"):
            sock.connect((PUBLIC, 9))
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("example.invalid", 80)
    assert recorder.refused == [f"connect {PUBLIC}", "getaddrinfo example.invalid"]
