"""What every endpoint starts from: the gateway and the authenticated caller."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from treadle.api.auth import Principal, authenticate
from treadle.app import Gateway
from treadle.errors import NotFound


def gateway(request: Request) -> Gateway:
    return cast("Gateway", request.app.state.gateway)


async def caller(request: Request) -> tuple[Gateway, Principal]:
    found = gateway(request)
    return found, await authenticate(found.store, request)


def path_param(request: Request, name: str, what: str) -> str:
    value = request.path_params.get(name)
    if not isinstance(value, str) or not value or len(value) > 100:
        raise NotFound(what)
    return value
