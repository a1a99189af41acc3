"""What went wrong talking to a provider, as treadle's error families.

- the provider answered with an error → `UpstreamError(code, detail)`: the call reached the
  service and the service said no (`detail.message` is a human sentence, `detail.httpStatus`
  the status when there was one);
- it refused the credentials → `ConnectionCredentialsError`: only a re-authentication helps;
- it could not be reached at all → `ActionRuntimeError`, naming the host only: exception texts
  and URLs can quote tokens or query secrets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import httpx2

from treadle.errors import (
    ActionRuntimeError,
    ConnectionCredentialsError,
    TreadleError,
    UpstreamError,
)

# Stable snake_case codes for providers that report a status but no code of their own.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    412: "precondition_failed",
    413: "payload_too_large",
    422: "validation_failed",
}


def status_code_name(status: int) -> str:
    return _STATUS_CODES.get(status, f"http_{status}")


def reauthenticate(provider: str, reason: str) -> ConnectionCredentialsError:
    return ConnectionCredentialsError(
        f"{provider} refused the connection's credentials ({reason}). "
        "Re-authenticate the connection."
    )


def http_failure(
    provider: str, response: httpx2.Response, code: str, detail: dict[str, Any]
) -> TreadleError:
    """The error for a non-2xx answer, given the provider's own code and detail for it."""
    status = response.status_code
    if status == HTTPStatus.UNAUTHORIZED:
        return reauthenticate(provider, code)
    message = detail.get("message") or f"{provider} answered HTTP {status}"
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        # One code for every provider outage, so callers can tell "try later" from "fix input".
        return UpstreamError("server_error", {"message": message, "httpStatus": status})
    return UpstreamError(code, {**detail, "message": message, "httpStatus": status})


def invalid_response(provider: str, response: httpx2.Response) -> UpstreamError:
    return UpstreamError(
        "invalid_response",
        {
            "message": f"{provider} answered with a body that is not the expected JSON",
            "httpStatus": response.status_code,
        },
    )


@contextmanager
def transport_failures(provider: str, host: str) -> Iterator[None]:
    """Network-level failures as action failures; the guard's refusals pass through as they are."""
    try:
        yield
    except (TimeoutError, httpx2.TimeoutException) as exc:
        raise ActionRuntimeError(
            f"{provider} did not answer in time", reason="timeout", host=host
        ) from exc
    except httpx2.ConnectError as exc:
        raise ActionRuntimeError(
            f"could not connect to {provider} at {host}", reason="connect_failed", host=host
        ) from exc
    except httpx2.InvalidURL as exc:
        raise ActionRuntimeError(
            f"the connection's base URL for {provider} is not a valid URL", reason="invalid_url"
        ) from exc
    except httpx2.HTTPError as exc:
        raise ActionRuntimeError(
            f"the request to {provider} at {host} failed ({type(exc).__name__})",
            reason="request_failed",
            host=host,
        ) from exc
