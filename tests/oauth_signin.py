"""Test helpers for the MCP endpoints' OAuth sign-in: the SDK's own client, a person posting
the consent form, and a client metadata document served over HTTPS on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

REDIRECT = "http://127.0.0.1:8765/callback"


@dataclass
class MemoryStorage:
    tokens: OAuthToken | None = None
    client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def form_of(page: str) -> dict[str, str]:
    """The consent page's form fields (hidden and the csrf value)."""
    fields = dict(re.findall(r'<input type=hidden name="?([a-z_]+)"? value="?([^">]*)"?>', page))
    return {k: unescape(v) for k, v in fields.items()}


@dataclass
class Person:
    """Someone at the browser: opens the authorization URL and answers the consent form."""

    api_key: str
    end_user: str | None = None
    decision: str = "allow"
    seen_pages: list[str] = field(default_factory=list)
    answer: AuthorizationCodeResult | None = None

    async def consent(self, url: str) -> httpx2.Response:
        async with httpx2.AsyncClient(timeout=30) as browser:
            shown = await browser.get(url)
            assert shown.status_code == 200, shown.text
            self.seen_pages.append(shown.text)
            fields = form_of(shown.text)
            fields.update(api_key=self.api_key, decision=self.decision)
            if self.end_user is not None:
                fields["end_user"] = self.end_user
            origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
            return await browser.post(
                f"{origin}/oauth/authorize", data=fields, headers={"Origin": origin}
            )

    async def redirect(self, url: str) -> None:
        answered = await self.consent(url)
        assert answered.status_code == 303, answered.text
        location = answered.headers["location"]
        assert location.startswith(REDIRECT), location
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.answer = AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self.answer is not None
        return self.answer


def provider(
    server_url: str,
    person: Any,
    storage: MemoryStorage,
    metadata_url: str | None = None,
    redirect: str = REDIRECT,
) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url,
        OAuthClientMetadata(
            redirect_uris=[redirect],  # type: ignore[list-item]
            client_name="Test MCP client",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none" if metadata_url else "client_secret_post",
        ),
        storage,
        redirect_handler=person.redirect,
        callback_handler=person.callback,
        client_metadata_url=metadata_url,
    )


@asynccontextmanager
async def signed_in_client(
    server_url: str, auth: OAuthClientProvider, era: str
) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30)) as http,
        Client(streamable_http_client(server_url, http_client=http), mode=era) as client,
    ):
        yield client


def loopback_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the serve process trusts it by SSL_CERT_FILE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def metadata_app(documents: dict[str, Any]) -> Any:
    """An ASGI app serving client metadata documents by path."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def document(request: Request) -> Response:
        found = documents.get(request.url.path)
        if found is None:
            return Response(status_code=404)
        return JSONResponse(found)

    return Starlette(routes=[Route("/{path:path}", document)])
