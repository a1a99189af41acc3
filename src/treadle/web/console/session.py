"""Who is signed in to the console: a server-side session behind an opaque cookie.

The session cookie is HttpOnly, SameSite=Strict, Secure when the console is reached over
HTTPS (directly or through the public URL), and scoped to `/console`. Every form carries a
CSRF token derived from the session secret; it is checked with the pages' double-submit
cookie and Origin check (`verified_form`) and must also match the session, so a token from
another session, or from before sign-in, is refused. The caller is the API key the session
was opened with, read again on each request: a revoked or expired key signs its sessions out.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from treadle.api.auth import Principal
from treadle.api.context import gateway
from treadle.app import Gateway
from treadle.store.console_sessions import ConsoleSession, ConsoleSessions

SESSION_COOKIE = "treadle_console"
CSRF_COOKIE = "treadle_console_csrf"
PATH = "/console"


def sessions(request: Request) -> ConsoleSessions:
    state = request.app.state
    found = getattr(state, "console_sessions", None)
    if not isinstance(found, ConsoleSessions):
        # One per application, so a test may shorten its idle time.
        found = ConsoleSessions(gateway(request).store.db)
        state.console_sessions = found
    return found


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), b"console-csrf", hashlib.sha256).hexdigest()


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or gateway(request).settings.public_url.startswith(
        "https:"
    )


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="strict", secure=is_https(request), path=PATH
    )


def clear_cookies(response: Response) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=PATH)


@dataclass(frozen=True, slots=True)
class SignedIn:
    gateway: Gateway
    principal: Principal
    session: ConsoleSession

    @property
    def csrf(self) -> str:
        return csrf_for(self.session.token)


async def signed_in(request: Request) -> SignedIn | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        return None
    gw = gateway(request)
    store = sessions(request)
    session = await store.find(token)
    if session is None:
        return None
    key = await gw.store.api_keys.get(session.org_id, session.api_key_id)
    if key is None or key.expired():
        await store.close(token)
        return None
    return SignedIn(gw, Principal(key), session)
