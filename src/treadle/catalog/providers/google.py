"""Google APIs (Sheets, Drive, Gmail) share one error format and one way of rate limiting.

Failures are `{"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}`; the canonical
status, lower-cased (`not_found`, `invalid_argument`, `permission_denied`), is the upstream
error's code. Quotas answer 429 `RESOURCE_EXHAUSTED`, or (Drive, Gmail) 403 with the reason
`rateLimitExceeded` / `userRateLimitExceeded`; Google rarely says how long to wait.
"""

from __future__ import annotations

from typing import Any

import httpx2

from treadle.catalog.providers import retry
from treadle.catalog.providers.failures import http_failure, status_code_name
from treadle.catalog.providers.rest import Provider, RateLimit

_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def _error(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _rate_limit(response: httpx2.Response) -> RateLimit | None:
    status = response.status_code
    if status == 403:
        reasons = {
            item.get("reason")
            for item in _error(response).get("errors", [])
            if isinstance(item, dict)
        }
        if not reasons & _RATE_REASONS:
            return None
    elif status != 429:
        return None
    return RateLimit(retry.retry_after_seconds(response.headers))


def google_provider(name: str, default_base_url: str) -> Provider:
    def check(response: httpx2.Response) -> None:
        if response.is_success:
            return
        error = _error(response)
        status = error.get("status")
        code = status.lower() if isinstance(status, str) and status else None
        message = error.get("message")
        detail = {"message": message} if isinstance(message, str) and message else {}
        raise http_failure(name, response, code or status_code_name(response.status_code), detail)

    return Provider(
        name=name, default_base_url=default_base_url, check=check, rate_limit=_rate_limit
    )
