"""Outbound-guard tests never touch the network: a fake resolver and an in-process socket recorder.

- `FakeDNS` answers the guard's lookups from a table, and parses IP literals the way the C
  library's resolver does (`socket.inet_aton` accepts `127.1`, `0x7f.1`, `2130706433`,
  `0177.0.0.1`), so every spelling of an address is checked without a query leaving the machine.
- `SocketRecorder` is an audit hook: it sees every `connect` and every real `getaddrinfo` this
  process makes (from any library, in any thread) and refuses, before the call happens, any
  that would leave loopback. A test that would reach the network fails instead.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from databases import ON_POSTGRESQL, SERVER_URL

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def literal_address(host: str) -> str | None:
    """The address an IP literal names, as the C resolver reads it; None for a name."""
    try:
        return str(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None


def is_loopback(host: str) -> bool:
    address = literal_address(host)
    return address is not None and any(ipaddress.ip_address(address) in net for net in LOOPBACK)


@dataclass
class FakeDNS:
    """Names map to answers; a name in `rebinding` answers its next entry at each lookup."""

    table: dict[str, Sequence[str]] = field(default_factory=dict)
    rebinding: dict[str, Iterator[Sequence[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    async def getaddrinfo(self, host: str | bytes, port: int, **_: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        self.lookups.append(name)
        literal = literal_address(name)
        if literal is not None:
            answers: Sequence[str] = [literal]
        elif name in self.rebinding:
            answers = next(self.rebinding[name])
        elif name in self.table:
            answers = self.table[name]
        else:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port),
            )
            for ip in answers
        ]


def _test_database_address() -> tuple[str, int] | None:
    """The PostgreSQL server the suite's own store talks to, when it runs on one: the gateway
    under test writes its activity there, which is no outbound call of an action."""
    if not ON_POSTGRESQL:
        return None
    url = urlsplit(SERVER_URL)
    return (url.hostname or "127.0.0.1", url.port or 5432)


@dataclass
class SocketRecorder:
    connects: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    store: tuple[str, int] | None = field(default_factory=_test_database_address)

    def on_connect(self, address: object) -> None:
        if not isinstance(address, tuple):
            return  # a Unix socket path: never the network
        host = str(address[0])
        if self.store is not None and (host, address[1]) == self.store:
            return
        self.connects.append(host)
        if not is_loopback(host):
            self.refused.append(f"connect {host}")
            raise OSError(errno.ENETUNREACH, f"test refused a connect to {host}")

    def on_lookup(self, host: object) -> None:
        if host is None:
            return  # a wildcard bind
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        if not is_loopback(name):
            self.refused.append(f"getaddrinfo {name}")
            raise socket.gaierror(socket.EAI_NONAME, f"test refused a lookup of {name}")


_active: list[SocketRecorder] = []
_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _active:
        return
    if event == "socket.connect":
        _active[-1].on_connect(args[1])
    elif event == "socket.getaddrinfo":
        _active[-1].on_lookup(args[0])


@contextmanager
def recording_sockets() -> Iterator[SocketRecorder]:
    """Record (and keep on loopback) every socket the block's code opens."""
    global _installed
    if not _installed:
        # Audit hooks cannot be removed; inactive, this one returns at once.
        sys.addaudithook(_audit)
        _installed = True
    recorder = SocketRecorder()
    _active.append(recorder)
    try:
        yield recorder
    finally:
        _active.remove(recorder)
