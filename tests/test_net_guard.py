"""The outbound-address guard, exercised through the shared client against a loopback server."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from treadle.errors import TreadleError
from treadle.net import (
    BlockedDestination,
    allow_private_network,
    build_http_client,
    is_public_address,
    private_network_allowed,
)

from loopback import serve


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


@dataclass
class FakeDNS:
    table: dict[str, Sequence[str]]
    lookups: list[str]

    async def getaddrinfo(self, host: str, port: int, **_: Any) -> list[Any]:
        self.lookups.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port),
            )
            for ip in self.table[host]
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Answers the guard's lookups from a table, so no query leaves the machine."""
    fake = FakeDNS(table={}, lookups=[])
    monkeypatch.setattr(anyio, "getaddrinfo", fake.getaddrinfo)
    return fake


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
