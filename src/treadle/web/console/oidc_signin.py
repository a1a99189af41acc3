"""Signing in to the console at the org's OpenID Connect provider.

The relying-party code is the MCP consent page's (`treadle.auth.identity.signin`): the
provider's page, the callback that checks the ID token, and a single-use ticket back here.
Who may sign in is decided by API keys, as with the key form: a person whose configured
claim (`sub`, or `email`) equals the name of exactly one live API key of the provider's org
signs in as that key, with its reach (org-wide, or one workspace). An admin lets someone in
by naming a key after them, and locks them out by revoking it; a person the provider knows
but no key names is refused (403, `no_console_access`).

A sign-in finishes only in the browser that started it: the start sets a random nonce in a
cookie and in the return path, and the finish compares them (the OIDC browser binding only
guards the callback; this guards the ticket's hand-over too, so nobody can sign a victim in
as themselves by sending a link).
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from treadle.api.context import gateway
from treadle.auth.identity import tickets
from treadle.auth.identity.signin import BROWSER_COOKIE, begin_oidc, set_browser_cookie
from treadle.errors import Refusal
from treadle.web.console.pages import HEADERS, render, signin_form
from treadle.web.console.session import CSRF_COOKIE, SESSION_COOKIE, csrf_for, sessions, set_cookie

NONCE_COOKIE = "treadle_console_oidc"
FINISH_PATH = "/console/signin/oidc"
NONCE_SECONDS = 600


async def start(request: Request) -> Response:
    """`GET /console/signin/oidc/start?idp=…`: to the provider's sign-in page. It changes
    nothing a forged link could abuse; finishing needs this browser's nonce cookie."""
    gw = gateway(request)
    idp_id = request.query_params.get("idp", "")[:100]
    nonce = secrets.token_urlsafe(24)
    browser = request.cookies.get(BROWSER_COOKIE)
    if not browser or len(browser) > 100:
        browser = secrets.token_urlsafe(32)
    try:
        location = await begin_oidc(
            gw, idp_id, f"{FINISH_PATH}?{urlencode({'n': nonce})}", browser=browser
        )
    except Refusal as refused:
        return await signin_form(
            request, f"{refused.message} ({refused.code.value})", refused.code.status
        )
    response = RedirectResponse(location, status_code=303, headers=HEADERS)
    set_browser_cookie(gw, response, browser)
    # Lax: the provider's redirect back is a cross-site navigation, and Strict would not come.
    response.set_cookie(
        NONCE_COOKIE,
        nonce,
        max_age=NONCE_SECONDS,
        path=FINISH_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https" or gw.settings.public_url.startswith("https:"),
    )
    return response


async def finish(request: Request) -> Response:
    """`GET /console/signin/oidc?n=…&ticket=…`: the ticket redeemed, a session opened for
    the API key named after the person, and on to the console."""
    gw = gateway(request)
    nonce = request.query_params.get("n", "")
    kept = request.cookies.get(NONCE_COOKIE, "")
    if not nonce or not kept or not hmac.compare_digest(nonce.encode(), kept.encode()):
        return await _refused(
            request, "This sign-in was started in another browser. Start again.", 400
        )
    try:
        person = await tickets.verify(gw, request.query_params.get("ticket", "")[:200])
    except tickets.TicketRefused:
        return await _refused(request, "This sign-in link is not valid any more. Start again.", 401)
    keys = [
        k
        for k in await gw.store.api_keys.list(person.org_id, None)
        if k.name == person.external_id and not k.expired()
    ]
    if len(keys) != 1:
        return await _refused(
            request,
            f"{person.external_id} has no console access here: an admin gives it by naming "
            "one API key exactly so. (no_console_access)",
            403,
        )
    session = await sessions(request).open(person.org_id, keys[0].id)
    # A page, not a redirect: the chain began at the provider (another site), and the
    # browser would leave the new SameSite=Strict cookie out of any redirect within it.
    response = await render(request, "signed_in.html", None, title="Signed in")
    set_cookie(request, response, SESSION_COOKIE, session.token)
    set_cookie(request, response, CSRF_COOKIE, csrf_for(session.token))
    response.delete_cookie(NONCE_COOKIE, path=FINISH_PATH)
    return response


async def _refused(request: Request, message: str, status: int) -> Response:
    response = await signin_form(request, message, status)
    response.delete_cookie(NONCE_COOKIE, path=FINISH_PATH)
    return response
