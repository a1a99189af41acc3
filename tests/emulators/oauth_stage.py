"""Wiring shared by the OAuth tests: an OAuth app pointing at the emulated authorization server,
and the browser's part of the flow (following the redirects by hand)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx2

CLIENT_ID = "client-treadle-test"
CLIENT_SECRET = "cs_s3cr3t-0f-the-oauth-app-123456"


async def put_app(
    rest: httpx2.AsyncClient, integration: str, provider_url: str, api_base_url: str
) -> httpx2.Response:
    return await rest.put(
        f"/api/v1/oauth-apps/{integration}",
        json={
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "scopes": ["repo"],
            "authorizationUrl": f"{provider_url}/authorize",
            "tokenUrl": f"{provider_url}/token",
            "apiBaseUrl": api_base_url,
            "allowPrivateNetwork": True,
        },
    )


def local(url: str) -> str:
    """The path and query of a gateway URL, to request through the ASGI client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def authorize(location: str) -> str:
    """The person at the provider: real HTTP to the emulator, which redirects back at once.
    Returns the callback URL the provider sent the browser to."""
    async with httpx2.AsyncClient(follow_redirects=False) as browser:
        answer = await browser.get(location)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def start(rest: httpx2.AsyncClient, **params: Any) -> str:
    started = await rest.get("/oauth/start", params=params)
    assert started.status_code == 302, started.text
    return started.headers["location"]
