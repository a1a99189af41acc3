"""Who the OAuth client is: a registration (RFC 7591) or a Client ID Metadata Document.

A client_id that is an HTTPS URL names its own metadata: the document is fetched through the
outbound guard (never from a non-public address unless the operator allows it for
development), must name exactly that URL as its `client_id`, and is cached for a few minutes.
Redirect URIs are compared exactly, except that a loopback redirect's port may differ
(RFC 8252 §7.3: native apps listen on whatever port is free).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from treadle.errors import TreadleError
from treadle.net.guard import BlockedDestination, allow_private_network

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{1,63}")
_BROWSER_SCHEMES = frozenset(
    {"javascript", "data", "file", "vbscript", "blob", "about", "filesystem", "ws", "wss"}
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
MAX_DOCUMENT_BYTES = 64 * 1024
CACHE_SECONDS = 300.0
MAX_CACHED = 1000


class ClientRefused(TreadleError):
    """The client cannot be identified; `error` is the OAuth error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class OAuthClient:
    client_id: str
    name: str | None
    redirect_uris: tuple[str, ...]
    kind: str  # "registered" | "metadata_document"
    auth_method: str  # none | client_secret_post | client_secret_basic
    secret_hash: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.client_id

    def redirect_uri(self, asked: str | None) -> str | None:
        """The redirect URI to use: the one asked for when it matches a registered one, or the
        only one registered when none was asked; None when nothing matches."""
        if asked is None:
            return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None
        return asked if any(_matches(asked, known) for known in self.redirect_uris) else None


def _matches(asked: str, registered: str) -> bool:
    if asked == registered:
        return True
    a, r = urlsplit(asked), urlsplit(registered)
    if a.scheme != "http" or r.scheme != "http":
        return False
    if a.hostname is None or r.hostname is None:
        return False
    if f"[{a.hostname}]" not in LOOPBACK_HOSTS and a.hostname not in LOOPBACK_HOSTS:
        return False
    try:
        a.port, r.port  # noqa: B018 - a malformed port raises
    except ValueError:
        return False
    return (a.hostname, a.path, a.query, a.fragment) == (r.hostname, r.path, r.query, r.fragment)


def valid_redirect_uri(uri: str) -> bool:
    """HTTPS, loopback HTTP, or a private-use scheme of a native app; never a fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if len(uri) > 2000 or parts.fragment or any(ord(c) < 33 for c in uri):
        return False
    scheme = parts.scheme.lower()
    if scheme == "https":
        return bool(parts.hostname)
    if scheme == "http":
        return parts.hostname is not None and (
            parts.hostname in LOOPBACK_HOSTS or f"[{parts.hostname}]" in LOOPBACK_HOSTS
        )
    # Native apps' own schemes (`cursor://…`, `com.example.app:/cb`, RFC 8252 §7.1); never one
    # that runs or reads something in the browser itself.
    return bool(_SCHEME.fullmatch(scheme)) and scheme not in _BROWSER_SCHEMES


def is_metadata_url(client_id: str) -> bool:
    parts = urlsplit(client_id)
    return parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/")


class MetadataDocuments:
    """Fetched client metadata documents, per process, for CACHE_SECONDS."""

    def __init__(self, http: httpx2.AsyncClient, private_allowed: bool) -> None:
        self._http = http
        self._private_allowed = private_allowed
        self._cache: dict[str, tuple[float, OAuthClient]] = {}

    async def client(self, url: str) -> OAuthClient:
        cached = self._cache.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        client = await self._fetch(url)
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[url] = (time.monotonic() + CACHE_SECONDS, client)
        return client

    async def _fetch(self, url: str) -> OAuthClient:
        try:
            with allow_private_network(self._private_allowed):
                async with self._http.stream(
                    "GET", url, headers={"Accept": "application/json"}, timeout=5.0
                ) as response:
                    if response.status_code != 200:
                        raise ClientRefused(
                            "invalid_client",
                            f"The client metadata document answered {response.status_code}",
                        )
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise ClientRefused(
                                "invalid_client", "The client metadata document is too large"
                            )
        except BlockedDestination:
            raise ClientRefused(
                "invalid_client", "The client metadata document is on a non-public address"
            ) from None
        except httpx2.HTTPError:
            raise ClientRefused(
                "invalid_client", "The client metadata document could not be fetched"
            ) from None
        try:
            document = json.loads(body)
        except ValueError:
            raise ClientRefused(
                "invalid_client", "The client metadata document is not JSON"
            ) from None
        return _from_document(url, document)


def _from_document(url: str, document: Any) -> OAuthClient:
    if not isinstance(document, dict) or document.get("client_id") != url:
        raise ClientRefused(
            "invalid_client", "The client metadata document does not name its own URL"
        )
    uris = document.get("redirect_uris")
    if (
        not isinstance(uris, list)
        or not uris
        or len(uris) > 20
        or not all(isinstance(u, str) and valid_redirect_uri(u) for u in uris)
    ):
        raise ClientRefused("invalid_client", "The client metadata document's redirect_uris")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        # A document is public: a shared secret in it would be no secret.
        raise ClientRefused(
            "invalid_client", "A client metadata document's client authenticates with none"
        )
    name = document.get("client_name")
    return OAuthClient(
        client_id=url,
        name=name[:200] if isinstance(name, str) and name.strip() else None,
        redirect_uris=tuple(uris),
        kind="metadata_document",
        auth_method="none",
    )
