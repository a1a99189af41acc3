"""Signing a person in at the org's OpenID Connect provider (treadle as relying party).

`begin_oidc` records a sign-in (state, nonce and PKCE verifier; 10 minutes) and answers the
provider's authorization URL. The provider sends the browser back to `/auth/oidc/callback`,
which claims the state once, trades the code for tokens, checks the ID token (signature by
the provider's JWKS, `iss`, `aud`/`azp`, `exp`, `nonce`), maps the configured claim to the end
user's externalId (creating the end user on first sign-in when the provider allows it) and
redirects to `return_to` with a single-use ticket (2 minutes) that `tickets.verify` redeems.
Every finished or refused callback is in the activity log (`idp_sign_in`).

A sign-in is bound to the browser that started it: `/auth/oidc/start` (or a caller of
`begin_oidc` that passes `browser` and sets `BROWSER_COOKIE` itself) gives the browser a
random cookie whose hash the sign-in keeps, and the callback refuses a browser without it.
Otherwise an attacker could finish their own sign-in in a victim's browser by sending them
the callback URL (login CSRF), and the victim would then consent as the attacker.
"""

from __future__ import annotations

import base64
import hmac
import html
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from treadle.api.context import gateway as gateway_of
from treadle.app import Gateway
from treadle.auth.identity.discovery import ProviderMetadata, ProviderUnavailable, provider_metadata
from treadle.auth.identity.end_users import NoEndUser, resolve_end_user
from treadle.auth.identity.jwts import JwtRefused, audiences, check_times, verified_claims
from treadle.auth.identity.records import IdentityProvider, IdpKind, PendingSignIn
from treadle.auth.identity.repository import IdentityProviders, SignIns, StateProblem
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.ids import hash_token
from treadle.net import BlockedDestination, allow_private_network
from treadle.oauth.client import challenge_for, new_verifier
from treadle.store.database import insert_activity
from treadle.web.layout import render_page, security_headers

log = logging.getLogger(__name__)

CALLBACK_PATH = "/auth/oidc/callback"
START_PATH = "/auth/oidc/start"
BROWSER_COOKIE = "treadle_oidc_browser"
SIGN_IN_LIFETIME = timedelta(minutes=10)
TICKET_LIFETIME = timedelta(minutes=2)
TOKEN_TIMEOUT = 15.0
MAX_RETURN_TO = 4096
_HEADERS = security_headers()


def providers(gateway: Gateway) -> IdentityProviders:
    return IdentityProviders(gateway.store.db, gateway.vault)


def sign_ins(gateway: Gateway) -> SignIns:
    return SignIns(gateway.store.db, gateway.vault)


def redirect_uri(gateway: Gateway) -> str:
    """The one redirect URI to register at the provider (from TREADLE_PUBLIC_URL)."""
    return f"{gateway.settings.public_url.rstrip('/')}{CALLBACK_PATH}"


def same_origin_path(value: str) -> str | None:
    """`value` when it is a path on this gateway (`/…`, not `//host` nor `/\\host`, which
    browsers read as another origin); None otherwise: no open redirect."""
    if not value or len(value) > MAX_RETURN_TO or not value.startswith("/"):
        return None
    if value.startswith("//") or "\\" in value or any(ord(c) < 33 or ord(c) == 127 for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


async def begin_oidc(
    gateway: Gateway,
    idp_id: str,
    return_to: str,
    *,
    workspace_id: str | None = None,
    browser: str | None = None,
) -> str:
    """The URL to send the browser to. `return_to` must be a path on this gateway; with
    `workspace_id` (the MCP server's workspace) the sign-in resolves to an end user there;
    with `browser` (the value of the caller's `BROWSER_COOKIE`) only that browser finishes."""
    safe = same_origin_path(return_to)
    if safe is None:
        raise ValidationFailed("return_to must be a path on this gateway", field="return_to")
    idp = await _oidc_provider(gateway, idp_id)
    if workspace_id is not None:
        workspace = await gateway.store.workspaces.get(idp.org_id, workspace_id)
        if workspace is None:
            raise NotFound("Workspace")
    try:
        metadata = await provider_metadata(gateway.http, idp.issuer, idp.allow_private_network)
    except ProviderUnavailable as unavailable:
        raise Refusal(
            ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE,
            "The identity provider's configuration could not be read",
            reason=unavailable.reason,
        ) from None
    if metadata.authorization_endpoint is None or metadata.token_endpoint is None:
        raise Refusal(
            ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE,
            "The identity provider names no authorization or token endpoint",
            reason="no_endpoints",
        )
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), new_verifier()
    await sign_ins(gateway).begin(
        state=state,
        nonce=nonce,
        verifier=verifier,
        idp=idp,
        workspace_id=workspace_id,
        return_to=safe,
        lifetime=SIGN_IN_LIFETIME,
        browser=browser,
    )
    scopes = ["openid", *(s for s in idp.scopes if s != "openid")]
    if idp.claim == "email" and "email" not in scopes:
        scopes.append("email")
    params = {
        "response_type": "code",
        "client_id": idp.client_id or "",
        "redirect_uri": redirect_uri(gateway),
        "scope": " ".join(scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge_for(verifier),
        "code_challenge_method": "S256",
    }
    return _with_query(metadata.authorization_endpoint, params)


async def _oidc_provider(gateway: Gateway, idp_id: str) -> IdentityProvider:
    found = await providers(gateway).find(idp_id) if 0 < len(idp_id) <= 100 else None
    if found is None or found.kind is not IdpKind.OIDC:
        raise NotFound("Identity provider")
    return found


def _with_query(url: str, values: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(values)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class SignInFailed(Exception):
    """The callback cannot finish; `reason` is a stable word recorded in the activity log."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Finished:
    location: str


_PAGES = {
    "state_unknown": "This sign-in link is not valid. Start again.",
    "state_used": "This sign-in link was already used. Start again.",
    "state_expired": "This sign-in link has expired. Start again.",
    "provider_denied": "The identity provider did not sign you in.",
    "end_user_unknown": "Your account is not set up here. Ask an administrator.",
    "provider_unavailable": "The identity provider could not be reached. Try again.",
    "browser_mismatch": "This sign-in was started in another browser. Start again here.",
}


async def finish(gateway: Gateway, params: dict[str, str], browser: str | None = None) -> Finished:
    state = params.get("state", "")
    if not state or len(state) > 200:
        raise SignInFailed("state_unknown")
    claimed = await sign_ins(gateway).claim(state)
    if isinstance(claimed, StateProblem):
        raise SignInFailed(claimed.value)
    key, pending = claimed
    idp = await providers(gateway).get(pending.org_id, pending.idp_id)
    try:
        if pending.browser_hash is not None and not hmac.compare_digest(
            hash_token(browser or ""), pending.browser_hash
        ):
            raise SignInFailed("browser_mismatch")
        if idp is None or idp.kind is not IdpKind.OIDC:
            raise SignInFailed("idp_removed")
        if params.get("error"):
            raise SignInFailed("provider_denied")
        code = params.get("code", "")
        if not code or len(code) > 4000:
            raise SignInFailed("no_code")
        claims = await _id_token_claims(gateway, idp, pending, code)
        external_id = _claim_value(idp, claims)
        end_user_id, created = None, False
        if pending.workspace_id is not None:
            email = claims.get("email")
            resolved = await resolve_end_user(
                gateway.store,
                org_id=idp.org_id,
                workspace_id=pending.workspace_id,
                external_id=external_id,
                email=email if isinstance(email, str) and len(email) <= 320 else None,
                allow_create=idp.allow_create_end_users,
                actor=f"idp:{idp.id}",
            )
            assert resolved.end_user is not None
            end_user_id, created = resolved.end_user.id, resolved.created
    except NoEndUser as refused:
        await _record(gateway, pending, None, status="refused", error=refused.reason)
        raise SignInFailed(refused.reason, 403) from None
    except SignInFailed as failed:
        await _record(gateway, pending, None, status="refused", error=failed.reason)
        raise
    ticket = secrets.token_urlsafe(32)
    async with gateway.store.db.write(f"idp:{pending.idp_id}") as txn:
        await sign_ins(gateway).issue_ticket(
            txn,
            key,
            ticket=ticket,
            external_id=external_id,
            end_user_id=end_user_id,
            lifetime=TICKET_LIFETIME,
        )
        await _record_in(
            txn.conn,
            pending,
            end_user_id,
            status="ok",
            error=None,
            detail={"externalId": external_id, "endUserCreated": created},
        )
    return Finished(_with_query(pending.return_to, {"ticket": ticket}))


async def _id_token_claims(
    gateway: Gateway, idp: IdentityProvider, pending: PendingSignIn, code: str
) -> dict[str, Any]:
    try:
        metadata = await provider_metadata(gateway.http, idp.issuer, idp.allow_private_network)
    except ProviderUnavailable as unavailable:
        log.warning("identity provider %s: %s", idp.id, unavailable.reason)
        raise SignInFailed("provider_unavailable", 502) from None
    id_token = await _exchange(gateway, idp, metadata, pending, code)
    try:
        claims = await verified_claims(
            gateway.http, metadata.jwks_uri, idp.allow_private_network, id_token
        )
    except ProviderUnavailable:
        raise SignInFailed("provider_unavailable", 502) from None
    except JwtRefused as refused:
        raise SignInFailed(f"id_token_{refused.reason}") from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer.rstrip("/") != idp.issuer.rstrip("/"):
        raise SignInFailed("wrong_issuer")
    named = audiences(claims)
    if idp.client_id not in named:
        raise SignInFailed("wrong_audience")
    # Several audiences: the token must have been issued to us (OpenID Connect Core §3.1.3.7).
    if len(named) > 1 and claims.get("azp") != idp.client_id:
        raise SignInFailed("wrong_audience")
    try:
        check_times(claims)
    except JwtRefused as refused:
        raise SignInFailed(f"id_token_{refused.reason}") from None
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(hash_token(nonce), pending.nonce_hash):
        raise SignInFailed("nonce_mismatch")
    return claims


async def _exchange(
    gateway: Gateway,
    idp: IdentityProvider,
    metadata: ProviderMetadata,
    pending: PendingSignIn,
    code: str,
) -> str:
    if metadata.token_endpoint is None or idp.client_id is None:
        raise SignInFailed("provider_unavailable", 502)
    secret = await providers(gateway).client_secret(idp)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(gateway),
        "code_verifier": pending.code_verifier,
    }
    headers = {"Accept": "application/json"}
    # client_secret_basic is the default (RFC 8414 §2); post only for providers that want it.
    if "client_secret_basic" in metadata.token_auth_methods or not metadata.token_auth_methods:
        # Both halves form-encoded first (RFC 6749 §2.3.1): a secret may hold a colon.
        pair = f"{quote(idp.client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        form.update(client_id=idp.client_id, client_secret=secret)
    try:
        with allow_private_network(idp.allow_private_network):
            response = await gateway.http.post(
                metadata.token_endpoint,
                data=form,
                headers=headers,
                timeout=TOKEN_TIMEOUT,
            )
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError, BlockedDestination):
        raise SignInFailed("provider_unavailable", 502) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_server_error:
        raise SignInFailed("provider_unavailable", 502)
    if not isinstance(body, dict) or response.is_error or "error" in body:
        raise SignInFailed("code_refused")
    id_token = body.get("id_token")
    if not isinstance(id_token, str):
        raise SignInFailed("no_id_token")
    return id_token


def _claim_value(idp: IdentityProvider, claims: dict[str, Any]) -> str:
    value = claims.get(idp.claim)
    if not isinstance(value, str) or not value:
        raise SignInFailed("claim_missing")
    # An unverified address could be anyone's: the provider must vouch for it.
    if idp.claim == "email" and claims.get("email_verified") is False:
        raise SignInFailed("email_not_verified")
    return value


async def _record(
    gateway: Gateway,
    pending: PendingSignIn,
    end_user_id: str | None,
    *,
    status: str,
    error: str | None,
) -> None:
    async with gateway.store.db.write(f"idp:{pending.idp_id}") as txn:
        await _record_in(txn.conn, pending, end_user_id, status=status, error=error, detail=None)


async def _record_in(
    conn: Any,
    pending: PendingSignIn,
    end_user_id: str | None,
    *,
    status: str,
    error: str | None,
    detail: dict[str, Any] | None,
) -> None:
    await insert_activity(
        conn,
        org_id=pending.org_id,
        workspace_id=pending.workspace_id,
        type="idp_sign_in",
        source="oidc",
        actor=f"idp:{pending.idp_id}",
        status=status,
        end_user_id=end_user_id,
        error_code=error,
        target_type="identity_provider",
        target_id=pending.idp_id,
        input=detail,
    )


async def callback(request: Request) -> Response:
    gateway = gateway_of(request)
    params = {k: v for k, v in request.query_params.items() if len(v) <= 4000}
    try:
        finished = await finish(gateway, params, request.cookies.get(BROWSER_COOKIE))
    except SignInFailed as failed:
        return _page(failed.reason, failed.status)
    return RedirectResponse(finished.location, status_code=303, headers=_HEADERS)


def _page(reason: str, status: int) -> Response:
    message = _PAGES.get(reason, "The sign-in could not be completed. Start again.")
    return render_page(
        "Not signed in",
        f"<h1>Not signed in</h1><p>{html.escape(message)}</p>"
        f"<p><small>Reason: <code>{html.escape(reason)}</code></small></p>",
        style="",
        headers={**_HEADERS, "X-Treadle-Sign-In-Error": reason},
        status=status,
    )


async def start(request: Request) -> Response:
    """`GET /auth/oidc/start?idp=…&return_to=…[&workspace=…]`: what a sign-in button links
    to. Starting a sign-in changes nothing a forged link could abuse (the person still signs
    in at their own provider), so it needs no CSRF token; finishing one needs this cookie."""
    gateway = gateway_of(request)
    browser = request.cookies.get(BROWSER_COOKIE)
    if not browser or len(browser) > 100:
        browser = secrets.token_urlsafe(32)
    params = request.query_params
    try:
        location = await begin_oidc(
            gateway,
            params.get("idp", ""),
            params.get("return_to", ""),
            workspace_id=params.get("workspace") or None,
            browser=browser,
        )
    except Refusal as refused:
        reason = str(refused.extra.get("reason", refused.code.value.lower()))
        return _page(reason, refused.code.status)
    response = RedirectResponse(location, status_code=303, headers=_HEADERS)
    set_browser_cookie(gateway, response, browser)
    return response


def set_browser_cookie(gateway: Gateway, response: Response, browser: str) -> None:
    """Lax, not Strict: the provider's redirect back is a cross-site top-level navigation."""
    response.set_cookie(
        BROWSER_COOKIE,
        browser,
        max_age=int(SIGN_IN_LIFETIME.total_seconds()),
        path="/auth/oidc",
        httponly=True,
        samesite="lax",
        secure=gateway.settings.public_url.startswith("https://"),
    )


routes = [
    Route(START_PATH, start, methods=["GET"]),
    Route(CALLBACK_PATH, callback, methods=["GET"]),
]
