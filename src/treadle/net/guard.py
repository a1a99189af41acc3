"""Outbound-address guard: integrations may only reach public addresses unless a call allows more.

The check runs inside the connection layer, on the addresses the socket actually connects to:
the backend resolves the host itself, checks every result and then connects to the checked IP
literal. A host that re-resolves to an internal address between a check and a connect (DNS
rebinding) therefore has no window to slip through. TLS SNI and the Host header still carry the
original host name because httpcore2 takes those from the request, not from the socket.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from http.cookiejar import CookieJar, DefaultCookiePolicy

import anyio
import httpcore2
import httpx2

from treadle.errors import ActionRuntimeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPredicate = Callable[[IPAddress], bool]

# Ranges that are not reachable on the public internet (or must not be reached from a gateway)
# listed explicitly, because the `ipaddress` flags differ across Python patch releases and miss
# some of them (3.11 calls 224.0.0.1 and 192.88.99.1 global, and ::ffff:127.0.0.1 not loopback).
_NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches local listeners on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
    )
)
_NON_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when the network would deliver it there."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in (_IPV4_COMPATIBLE, _IPV4_TRANSLATED, _NAT64_WELL_KNOWN)):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.is_site_local or any(ip in net for net in _NON_PUBLIC_V6):
            return False
    elif any(ip in net for net in _NON_PUBLIC_V4):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


_private_network_allowed: ContextVar[bool] = ContextVar(
    "treadle_private_network_allowed", default=False
)


@contextmanager
def allow_private_network(allowed: bool) -> Iterator[None]:
    """Let outbound calls made inside the block reach non-public addresses (or not)."""
    token = _private_network_allowed.set(allowed)
    try:
        yield
    finally:
        _private_network_allowed.reset(token)


def private_network_allowed() -> bool:
    return _private_network_allowed.get()


class BlockedDestination(ActionRuntimeError):
    """The host resolves to an address outbound calls may not reach.

    An `ActionRuntimeError` so that any integration using the shared client surfaces it as
    ACTION_FAILED without catching it. Carries the host only: never a URL, which may hold
    credentials or query secrets.
    """

    def __init__(self, host: str) -> None:
        super().__init__(
            f"destination {host} is not allowed: it resolves to a non-public address",
            reason="destination_not_allowed",
            host=host,
        )
        self.host = host


class GuardedNetworkBackend(httpcore2.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked IP literal."""

    def __init__(
        self,
        is_allowed_address: AddressPredicate = is_public_address,
        inner: httpcore2.AsyncNetworkBackend | None = None,
    ) -> None:
        self._is_allowed_address = is_allowed_address
        self._inner = httpcore2.AnyIOBackend() if inner is None else inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - fixed by the httpcore2 interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        # One deadline covers resolution and every connect attempt, as the caller expects of a
        # connect timeout.
        try:
            with anyio.fail_after(timeout):
                addresses = await _resolve(host, port)
                if not private_network_allowed() and not all(
                    self._is_allowed_address(ip) for ip in addresses
                ):
                    raise BlockedDestination(host)
                return await self._connect_any(addresses, port, local_address, socket_options)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(f"timed out connecting to {host}") from exc

    async def _connect_any(
        self,
        addresses: list[IPAddress],
        port: int,
        local_address: str | None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None,
    ) -> httpcore2.AsyncNetworkStream:
        failure: httpcore2.ConnectError | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, local_address=local_address, socket_options=socket_options
                )
            except httpcore2.ConnectError as exc:
                failure = exc
        assert failure is not None  # _resolve never returns an empty list
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in resolver order, without duplicates."""
    try:
        results = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise httpcore2.ConnectError(f"could not resolve {host}") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(sockaddr[0]) for *_, sockaddr in results))
    if not addresses:
        raise httpcore2.ConnectError(f"could not resolve {host}")
    return addresses


# Most specific first: the first match decides.
_ERROR_MAP: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise httpcore2 errors as their httpx2 twins; anything else (BlockedDestination) as is."""
    try:
        yield
    except Exception as exc:
        for source, target in _ERROR_MAP:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx2.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport whose connections all come from a `GuardedNetworkBackend`.

    It keeps two pools because pooled connections are reused by origin without reconnecting:
    a connection opened while private networks were allowed must never serve a call where they
    are not.
    """

    def __init__(
        self,
        *,
        is_allowed_address: AddressPredicate = is_public_address,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        context = httpx2.create_ssl_context() if ssl_context is None else ssl_context
        self._strict = _pool(GuardedNetworkBackend(is_allowed_address), context)
        self._permissive = _pool(GuardedNetworkBackend(is_allowed_address), context)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        assert isinstance(request.stream, httpx2.AsyncByteStream)
        pool = self._permissive if private_network_allowed() else self._strict
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        try:
            await self._strict.aclose()
        finally:
            await self._permissive.aclose()


def _pool(
    backend: GuardedNetworkBackend, ssl_context: ssl.SSLContext
) -> httpcore2.AsyncConnectionPool:
    # Limits are httpx2's defaults; HTTP/1.1 only, as h2 is not a dependency.
    return httpcore2.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=backend,
    )


def build_http_client(
    *, is_allowed_address: AddressPredicate = is_public_address, timeout: float = 30.0
) -> httpx2.AsyncClient:
    """The process-wide outbound client every integration's traffic goes through."""
    return httpx2.AsyncClient(
        transport=GuardedTransport(is_allowed_address=is_allowed_address),
        timeout=timeout,
        follow_redirects=False,
        # Environment proxies would be mounted as extra transports that bypass the guard.
        trust_env=False,
        # The client is shared by every workspace: a cookie one upstream sets must never be
        # replayed on another tenant's call, so the jar refuses to store any.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
