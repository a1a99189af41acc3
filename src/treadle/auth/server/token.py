"""`POST /oauth/token` (authorization code with PKCE S256, refresh with rotation) and
`POST /oauth/revoke` (RFC 7009).

Errors are RFC 6749 §5.2 JSON (`invalid_grant`, `invalid_client`, …), never a page or a 500.
"""

from __future__ import annotations

import base64
import hmac
from urllib.parse import parse_qs, unquote

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from treadle.api.bodies import BodyTooLarge, read_bounded
from treadle.auth.server.authority import Authority
from treadle.auth.server.clients import ClientRefused, OAuthClient
from treadle.auth.server.grants import CodeReused, Grant, IssuedTokens
from treadle.auth.server.registration import NO_STORE, oauth_error
from treadle.ids import hash_token

MAX_FORM = 16 * 1024


async def _form(request: Request) -> dict[str, str] | Response:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return oauth_error("invalid_request", "Send the parameters form-encoded")
    try:
        raw = await read_bounded(request, MAX_FORM)
    except BodyTooLarge:
        return oauth_error("invalid_request", "The request is too large", 413)
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    if any(len(values) > 1 for values in parsed.values()):
        return oauth_error("invalid_request", "A parameter was sent twice")
    return {k: v[0] for k, v in parsed.items()}


async def _client(
    request: Request, form: dict[str, str], authority: Authority
) -> OAuthClient | Response:
    """RFC 6749 §2.3: HTTP Basic, the secret in the form, or a public client by id alone."""
    secret: str | None = None
    client_id = form.get("client_id")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except ValueError:
            return oauth_error("invalid_client", "Malformed Basic credentials", 401)
        basic_id, _, basic_secret = decoded.partition(":")
        client_id, secret = unquote(basic_id), unquote(basic_secret)
    elif "client_secret" in form:
        secret = form["client_secret"]
    if not client_id:
        return oauth_error("invalid_client", "client_id is required", 401)
    try:
        client = await authority.client(client_id)
    except ClientRefused as refused:
        return oauth_error("invalid_client", refused.description, 401)
    if client.secret_hash is not None:
        if secret is None or not hmac.compare_digest(
            hash_token(secret).encode(), client.secret_hash.encode()
        ):
            return oauth_error("invalid_client", "The client secret is wrong or missing", 401)
    elif secret is not None and client.auth_method == "none":
        return oauth_error("invalid_client", "This client has no secret", 401)
    return client


def _tokens(issued: IssuedTokens) -> Response:
    return JSONResponse(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "refresh_token": issued.refresh_token,
            "scope": " ".join(issued.grant.scopes),
        },
        headers=NO_STORE,
    )


def _resource_refused(form: dict[str, str], grant: Grant) -> Response | None:
    resource = form.get("resource")
    if resource is not None and resource.rstrip("/") != grant.resource:
        return oauth_error("invalid_target", "The token was granted for another resource")
    return None


async def token(request: Request, authority: Authority) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    client = await _client(request, form, authority)
    if isinstance(client, Response):
        return client
    kind = form.get("grant_type")
    if kind == "authorization_code":
        return await _code(form, client, authority)
    if kind == "refresh_token":
        return await _refresh(form, client, authority)
    return oauth_error("unsupported_grant_type", "authorization_code or refresh_token")


async def _code(form: dict[str, str], client: OAuthClient, authority: Authority) -> Response:
    code, verifier = form.get("code", ""), form.get("code_verifier", "")
    if not code or not verifier:
        return oauth_error("invalid_request", "code and code_verifier are required")
    try:
        pending = await authority.grants.redeem_code(code, client.client_id)
    except CodeReused:
        return oauth_error(
            "invalid_grant", "This code was already used; the tokens it gave are revoked"
        )
    if pending is None:
        return oauth_error("invalid_grant", "The code is unknown, expired or not this client's")
    # The code is spent either way: a wrong verifier does not get a second try.
    challenge = create_s256_code_challenge(verifier) if 43 <= len(verifier) <= 128 else ""
    if not hmac.compare_digest(challenge.encode(), pending.code_challenge.encode()):
        await authority.grants.revoke(pending.grant, f"oauth_client:{client.client_id}", "PKCE")
        return oauth_error("invalid_grant", "The code_verifier does not match the challenge")
    if form.get("redirect_uri", pending.redirect_uri) != pending.redirect_uri:
        await authority.grants.revoke(
            pending.grant, f"oauth_client:{client.client_id}", "redirect_uri mismatch"
        )
        return oauth_error("invalid_grant", "redirect_uri differs from the authorization's")
    refused = _resource_refused(form, pending.grant)
    if refused is not None:
        return refused
    issued = await authority.grants.issue(pending.grant, f"oauth_client:{client.client_id}")
    return _tokens(issued)


async def _refresh(form: dict[str, str], client: OAuthClient, authority: Authority) -> Response:
    presented = form.get("refresh_token", "")
    if not presented:
        return oauth_error("invalid_request", "refresh_token is required")
    try:
        grant = await authority.grants.rotate(presented, client.client_id)
    except CodeReused:
        return oauth_error(
            "invalid_grant", "This refresh token was already used; the grant is revoked"
        )
    if grant is None:
        return oauth_error("invalid_grant", "The refresh token is unknown, expired or revoked")
    refused = _resource_refused(form, grant)
    if refused is not None:
        return refused
    asked = form.get("scope")
    if asked is not None and not set(asked.split()) <= set(grant.scopes):
        return oauth_error("invalid_scope", "A refresh cannot widen the grant")
    issued = await authority.grants.issue(grant, f"oauth_client:{client.client_id}")
    return _tokens(issued)


async def revoke(request: Request, authority: Authority) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    client = await _client(request, form, authority)
    if isinstance(client, Response):
        return client
    presented = form.get("token", "")
    if not presented:
        return oauth_error("invalid_request", "token is required")
    await authority.grants.revoke_token(presented, client.client_id)
    # RFC 7009 §2.2: 200 whether or not the token was known.
    return Response(status_code=200, headers=NO_STORE)
