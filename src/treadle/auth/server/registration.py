"""`POST /oauth/register`: Dynamic Client Registration (RFC 7591), which Claude and Cursor use.

The metadata is checked by Authlib's RFC 7591 claims and by treadle's redirect rule; a client
that authenticates gets a secret, shown once and stored hashed. Registrations are open, as the
MCP authorization spec expects: a registration alone reaches nothing until a person consents.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from authlib.oauth2.rfc7591 import ClientMetadataClaims
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from treadle.api.bodies import BodyTooLarge, read_bounded
from treadle.auth.server.clients import OAuthClient, valid_redirect_uri
from treadle.auth.server.config import SCOPES_SUPPORTED
from treadle.auth.server.tables import oauth_clients
from treadle.clock import now_iso
from treadle.ids import hash_token
from treadle.store.database import Database

MAX_BODY = 32 * 1024
AUTH_METHODS = ("none", "client_secret_post", "client_secret_basic")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=NO_STORE
    )


class Registrations:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, client_id: str) -> OAuthClient | None:
        if len(client_id) > 200:
            return None
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    oauth_clients.select().where(oauth_clients.c.client_id == client_id)
                )
            ).first()
        if row is None:
            return None
        return OAuthClient(
            client_id=row.client_id,
            name=row.client_name,
            redirect_uris=tuple(row.redirect_uris),
            kind="registered",
            auth_method=row.auth_method,
            secret_hash=row.secret_hash,
        )

    async def register(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """The registration response; raises ValueError(error, description) when refused."""
        client_id = f"mcpc_{secrets.token_urlsafe(18)}"
        method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
        secret = None if method == "none" else f"mcps_{secrets.token_urlsafe(32)}"
        issued_at = now_iso()
        name = metadata.get("client_name")
        async with self._db.write(f"oauth_client:{client_id}") as txn:
            await txn.conn.execute(
                oauth_clients.insert().values(
                    client_id=client_id,
                    client_name=name,
                    redirect_uris=list(metadata["redirect_uris"]),
                    secret_hash=None if secret is None else hash_token(secret),
                    auth_method=method,
                    client_uri=metadata.get("client_uri"),
                    created_at=issued_at,
                )
            )
        answer: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": int(time.time()),
            "redirect_uris": list(metadata["redirect_uris"]),
            "grant_types": metadata.get("grant_types", ["authorization_code", "refresh_token"]),
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
        }
        if name is not None:
            answer["client_name"] = name
        if "client_uri" in metadata:
            answer["client_uri"] = metadata["client_uri"]
        if "scope" in metadata:
            answer["scope"] = metadata["scope"]
        if secret is not None:
            answer["client_secret"] = secret
            answer["client_secret_expires_at"] = 0
        return answer


def check_metadata(metadata: Any) -> tuple[str, str] | None:
    """The (error, description) refusing a registration, None when it is acceptable."""
    if not isinstance(metadata, dict):
        return "invalid_client_metadata", "The body must be a JSON object"
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > 20:
        return "invalid_redirect_uri", "redirect_uris must list 1 to 20 URIs"
    if not all(isinstance(u, str) and valid_redirect_uri(u) for u in uris):
        return (
            "invalid_redirect_uri",
            "A redirect URI must be HTTPS, loopback HTTP or a native app's own scheme",
        )
    try:
        ClientMetadataClaims(metadata, {}).validate()
    except JoseError as refused:
        return "invalid_client_metadata", f"Invalid client metadata ({refused.description})"
    if metadata.get("token_endpoint_auth_method", "client_secret_basic") not in AUTH_METHODS:
        return "invalid_client_metadata", f"token_endpoint_auth_method is one of {AUTH_METHODS}"
    grants = metadata.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not set(grants) <= {"authorization_code", "refresh_token"}:
        return "invalid_client_metadata", "grant_types: authorization_code, refresh_token"
    if not set(metadata.get("response_types", ["code"])) <= {"code"}:
        return "invalid_client_metadata", "response_types: code"
    scope = metadata.get("scope")
    if scope is not None and (
        not isinstance(scope, str) or not set(scope.split()) <= set(SCOPES_SUPPORTED)
    ):
        return "invalid_client_metadata", f"scope: {' '.join(SCOPES_SUPPORTED)}"
    name = metadata.get("client_name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
        return "invalid_client_metadata", "client_name is 1 to 200 characters"
    return None


async def register(request: Request, registrations: Registrations) -> Response:
    try:
        raw = await read_bounded(request, MAX_BODY)
    except BodyTooLarge:
        return oauth_error("invalid_client_metadata", "The registration is too large", 413)
    try:
        metadata = json.loads(raw)
    except ValueError:
        return oauth_error("invalid_client_metadata", "The body must be JSON")
    refused = check_metadata(metadata)
    if refused is not None:
        return oauth_error(*refused)
    answer = await registrations.register(metadata)
    return JSONResponse(answer, status_code=201, headers=NO_STORE)
