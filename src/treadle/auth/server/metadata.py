"""Discovery documents: the protected resource (RFC 9728) and the authorization server
(RFC 8414, checked by Authlib's model before it is served)."""

from __future__ import annotations

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from treadle.auth import external_jwt
from treadle.auth.server.authority import Authority
from treadle.auth.server.config import SCOPE_MCP, SCOPES_SUPPORTED, resource_url
from treadle.auth.server.registration import oauth_error

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
REGISTER_PATH = "/oauth/register"
REVOKE_PATH = "/oauth/revoke"
_CACHE = {"Cache-Control": "max-age=300", "Access-Control-Allow-Origin": "*"}


def server_metadata(issuer: str) -> dict[str, object]:
    metadata = AuthorizationServerMetadata(
        {
            "issuer": issuer,
            "authorization_endpoint": issuer + AUTHORIZE_PATH,
            "token_endpoint": issuer + TOKEN_PATH,
            "registration_endpoint": issuer + REGISTER_PATH,
            "revocation_endpoint": issuer + REVOKE_PATH,
            "scopes_supported": list(SCOPES_SUPPORTED),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": [
                "none",
                "client_secret_post",
                "client_secret_basic",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "none",
                "client_secret_post",
                "client_secret_basic",
            ],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": True,
        }
    )
    metadata.validate()
    return dict(metadata)


async def authorization_server(request: Request, authority: Authority) -> Response:
    return JSONResponse(server_metadata(authority.config.base_url(request)), headers=_CACHE)


async def protected_resource(request: Request, authority: Authority) -> Response:
    server_id = request.path_params.get("server_id", "")
    server = await authority.gateway.store.config.mcp_server(str(server_id))
    if server is None:
        return oauth_error("not_found", "No such MCP endpoint", 404)
    base = authority.config.base_url(request)
    # An org may point the server at its own authorization server instead of treadle's.
    provider = await external_jwt.external_provider(authority.gateway, server)
    return JSONResponse(
        {
            "resource": resource_url(base, server.id),
            "authorization_servers": [base if provider is None else provider.issuer],
            "scopes_supported": [SCOPE_MCP] if provider is None else list(provider.scopes),
            "bearer_methods_supported": ["header"],
            "resource_name": server.name,
        },
        headers=_CACHE,
    )
