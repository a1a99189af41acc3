"""Calls to a provider's REST API on behalf of one connection.

Every request carries the connection's bearer token and goes to the connection's base URL
override (a GitHub Enterprise host, a regional endpoint, a test emulator) or the provider's
default, through the shared outbound client. A rate-limited request is retried within
`retry.RETRY_BUDGET`; any other failure becomes one of treadle's errors (see `failures`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
import httpx2

from treadle.catalog.credentials import base_url, bearer_token
from treadle.catalog.model import ActionContext, JSONObject
from treadle.catalog.providers import retry
from treadle.catalog.providers.failures import invalid_response, transport_failures
from treadle.errors import UpstreamError

# Bounds one request, reading the answer included; read at call time so it can be replaced.
REQUEST_TIMEOUT_SECONDS = 30.0

Params = Mapping[str, str | int | bool | list[str] | None]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A request the provider refused for going too fast."""

    # Seconds the provider asked us to wait; None when it did not say.
    wait: float | None


def rate_limited_on_429(response: httpx2.Response) -> RateLimit | None:
    if response.status_code != 429:
        return None
    return RateLimit(retry.retry_after_seconds(response.headers))


@dataclass(frozen=True, slots=True)
class Provider:
    """What differs between providers: naming, defaults and how each one reports errors."""

    name: str
    default_base_url: str
    # Raises the provider's error for an answer that is not a success (nor a rate limit).
    check: Callable[[httpx2.Response], None]
    rate_limit: Callable[[httpx2.Response], RateLimit | None] = rate_limited_on_429
    headers: Mapping[str, str] = field(default_factory=dict)


def segment(value: str | int) -> str:
    """One URL path segment: user input must not be able to add segments or a query."""
    return quote(str(value), safe="")


def pick(data: Mapping[str, Any], *names: str) -> JSONObject:
    """The inputs among `names` the caller gave, in that order: a request's body or query."""
    return {name: data[name] for name in names if name in data}


def read_json(provider: Provider, response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise invalid_response(provider.name, response) from None


class RestClient:
    """One connection's view of one provider's API."""

    def __init__(self, ctx: ActionContext, provider: Provider) -> None:
        self._http = ctx.http
        self._provider = provider
        self._base = base_url(ctx.connection, provider.default_base_url)
        self._headers = {
            **provider.headers,
            "authorization": f"Bearer {bearer_token(ctx.connection)}",
        }

    async def json_object(
        self, method: str, path: str, *, params: Params | None = None, body: Any = None
    ) -> JSONObject:
        """The answer of a successful request, which must be a JSON object."""
        response = await self.send(method, path, params=params, body=body)
        found = read_json(self._provider, response)
        if not isinstance(found, dict):
            raise invalid_response(self._provider.name, response)
        return found

    async def send(
        self, method: str, path: str, *, params: Params | None = None, body: Any = None
    ) -> httpx2.Response:
        """A successful answer to `method base+path`, after rate-limit retries."""
        budget = retry.RETRY_BUDGET
        waited = 0.0
        retries = 0
        while True:
            response = await self._send_once(method, f"{self._base}{path}", params, body)
            limited = self._provider.rate_limit(response)
            if limited is None:
                self._provider.check(response)
                return response
            wait = limited.wait if limited.wait is not None else budget.backoff(retries)
            if retries >= budget.max_retries or waited + wait > budget.max_total_seconds:
                raise self._rate_limited(wait, retries + 1)
            await anyio.sleep(wait)
            waited += wait
            retries += 1

    async def _send_once(
        self, method: str, url: str, params: Params | None, body: Any
    ) -> httpx2.Response:
        query = {key: value for key, value in (params or {}).items() if value is not None}
        timeout = REQUEST_TIMEOUT_SECONDS
        with transport_failures(self._provider.name, _host(url)):
            # The client's own timeouts are per read; this also bounds a trickling answer.
            with anyio.fail_after(timeout):
                return await self._http.request(
                    method,
                    url,
                    params=query,
                    json=body,
                    headers=self._headers,
                    timeout=timeout,
                )

    def _rate_limited(self, wait: float, attempts: int) -> UpstreamError:
        seconds = max(1, math.ceil(wait))
        return UpstreamError(
            "rate_limited",
            {
                "message": (
                    f"{self._provider.name} is rate limiting these requests; "
                    f"try again in {seconds} seconds"
                ),
                "retryAfter": seconds,
                "attempts": attempts,
            },
        )


def _host(url: str) -> str:
    try:
        return httpx2.URL(url).host
    except httpx2.InvalidURL:
        return "?"
