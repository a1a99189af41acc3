"""treadle as an MCP OAuth client of an upstream MCP server whose record says `auth: oauth`.

Before the first sign-in (and again when the upstream's URL changed) treadle finds out who
issues the upstream's tokens, as the MCP authorization spec has a client do: an unauthenticated
request answers 401 with `WWW-Authenticate: Bearer resource_metadata=…`; that protected-resource
metadata (RFC 9728, else its well-known URLs) names the authorization server, whose metadata
(RFC 8414, else OpenID discovery) gives the endpoints. The client treadle signs in as is the
record's own (a client id and secret registered by hand), else, where the authorization server
accepts client ID metadata documents and treadle's public URL is https, the URL of treadle's
document (`/oauth/client-metadata.json`, a public client), else one registered there and then
(RFC 7591 dynamic registration); its redirect URI is treadle's `/oauth/callback`. It is stored
as the org's OAuth app for the upstream's integration, with the resource (RFC 8707) its tokens
are for, so the ordinary flow (`oauth.flow`: PKCE S256, the connect page, the callback) and the
refresh-once machinery (`oauth.refresh`) serve upstream sign-ins as they serve built-ins.

Every request goes through the gateway's guarded client; loopback and private addresses only
when the upstream record sets `allowPrivateNetwork`. Nothing the authorization server answers
is quoted in an error or a log line: it may echo what it was sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx2
from mcp.client.auth import OAuthRegistrationError
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_client_registration_request,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
    get_client_metadata_scopes,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    handle_registration_response,
    is_valid_client_metadata_url,
    issuers_match,
    should_use_client_metadata_url,
)
from mcp.shared.auth import OAuthClientMetadata, OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from mcp.types import LATEST_PROTOCOL_VERSION
from pydantic import AnyUrl

from treadle.errors import ErrorCode, Refusal
from treadle.net import BlockedDestination, allow_private_network
from treadle.oauth.records import OAuthApp
from treadle.oauth.repository import OAuthApps
from treadle.store import Store
from treadle.store.portable import serialise
from treadle.store.upstreams import Upstream, Upstreams
from treadle.vault import Vault

log = logging.getLogger(__name__)

DISCOVERY_TIMEOUT = 20.0
METADATA_PATH = "/oauth/client-metadata.json"
_GRANTS = ["authorization_code", "refresh_token"]
# An MCP request an upstream that wants a token answers with 401 and its metadata's URL.
_PROBE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LATEST_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "treadle", "version": "1"},
    },
}


class SignInUnavailable(Refusal):
    """The upstream's authorization server could not be found or would not register treadle."""

    def __init__(self, upstream: Upstream, why: str) -> None:
        super().__init__(
            ErrorCode.CONNECTION_ERROR,
            f"Signing in to the upstream MCP server '{upstream.name}' is not possible now: {why}",
            reason="upstream_sign_in_unavailable",
        )


@dataclass(frozen=True, slots=True)
class Discovered:
    resource: str
    issuer: str
    metadata: OAuthMetadata
    scope: str | None


def is_oauth(upstream: Upstream) -> bool:
    return upstream.auth.get("type") == "oauth" and upstream.transport.get("type") != "stdio"


class UpstreamClients:
    def __init__(
        self,
        store: Store,
        apps: OAuthApps,
        vault: Vault,
        http: httpx2.AsyncClient,
        public_url: str,
        redirect_uri: str,
    ) -> None:
        self._store = store
        self._records = Upstreams(store.db)
        self._apps = apps
        self._vault = vault
        self._http = http
        self._redirect_uri = redirect_uri
        metadata_url = f"{public_url.rstrip('/')}{METADATA_PATH}"
        # A client id must be an https URL with a path (an authorization server fetches it).
        self.metadata_url = metadata_url if is_valid_client_metadata_url(metadata_url) else None

    def metadata_document(self) -> dict[str, object]:
        """treadle's client ID metadata document: who it is as a public OAuth client."""
        return {
            "client_id": self.metadata_url,
            "client_name": "treadle",
            "redirect_uris": [self._redirect_uri],
            "grant_types": list(_GRANTS),
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "web",
        }

    async def upstream_named(self, org_id: str, integration_name: str) -> Upstream | None:
        """The org's OAuth upstream whose integration is `integration_name`, if any."""
        for upstream in await self._records.list(org_id):
            if upstream.name == integration_name and is_oauth(upstream):
                return upstream
        return None

    async def app_for(self, org_id: str, integration_name: str, actor: str) -> OAuthApp | None:
        """The OAuth app to sign in to an OAuth upstream with, discovered and registered first
        when there is none yet (or the stored one is for another URL or client); None when
        `integration_name` is not an OAuth upstream of the org."""
        upstream = await self.upstream_named(org_id, integration_name)
        if upstream is None:
            return None
        current = await self._apps.get(org_id, integration_name)
        if current is not None and self._still_fits(upstream, current):
            return current
        async with self._store.db.write(actor) as txn:
            # Sign-ins starting at once (any process) register one client, not one each:
            # a state made with a client that was replaced meanwhile could not be finished.
            await serialise(txn.conn, "upstream oauth client", org_id, integration_name)
            current = await self._apps.get(org_id, integration_name)
            if current is not None and self._still_fits(upstream, current):
                return current
            with allow_private_network(upstream.allow_private_network):
                found = await self._discover(upstream)
                client_id, secret = await self._client(upstream, found)
            app, _created = await self._apps.put(
                txn,
                org_id=org_id,
                integration_name=integration_name,
                client_id=client_id,
                client_secret=secret,
                scopes=tuple((found.scope or "").split()),
                authorize_url=str(found.metadata.authorization_endpoint),
                token_url=str(found.metadata.token_endpoint),
                api_base_url=None,
                allow_private_network=upstream.allow_private_network,
                resource=found.resource,
            )
        log.info("upstream %s: OAuth client %s at %s", upstream.id, client_id, found.issuer)
        return app

    def _still_fits(self, upstream: Upstream, app: OAuthApp) -> bool:
        configured = upstream.auth.get("clientId")
        return (
            app.resource is not None
            and check_resource_allowed(_url(upstream), app.resource)
            and app.allow_private_network == upstream.allow_private_network
            and (configured is None or configured == app.client_id)
        )

    async def _get(self, url: str) -> httpx2.Response:
        return await self._http.get(
            url, headers={"Accept": "application/json"}, timeout=DISCOVERY_TIMEOUT
        )

    async def _discover(self, upstream: Upstream) -> Discovered:
        server_url = _url(upstream)
        try:
            probe = await self._http.post(
                server_url,
                json=_PROBE,
                headers={"Accept": "application/json, text/event-stream"},
                timeout=DISCOVERY_TIMEOUT,
            )
            await probe.aread()
            refused = probe.status_code in (401, 403)
            metadata_url = extract_resource_metadata_from_www_auth(probe) if refused else None
            challenged_scope = extract_scope_from_www_auth(probe) if refused else None
            resource_metadata: ProtectedResourceMetadata | None = None
            for candidate in build_protected_resource_metadata_discovery_urls(
                metadata_url, server_url
            ):
                resource_metadata = await handle_protected_resource_response(
                    await self._get(candidate)
                )
                if resource_metadata is not None:
                    break
            if resource_metadata is None:
                raise SignInUnavailable(upstream, "it publishes no protected resource metadata")
            resource = resource_url_from_server_url(resource_metadata.resource)
            # RFC 9728 §3.3: metadata for another resource must not be used.
            if not check_resource_allowed(server_url, resource):
                raise SignInUnavailable(upstream, "its metadata names another resource")
            issuer = str(resource_metadata.authorization_servers[0])
            metadata = await self._authorization_server(upstream, issuer, server_url)
        except (httpx2.HTTPError, BlockedDestination) as error:
            if isinstance(error, BlockedDestination):
                raise SignInUnavailable(
                    upstream,
                    "its authorization server is on a non-public address and the record "
                    "does not set allowPrivateNetwork: true",
                ) from None
            raise SignInUnavailable(upstream, f"no answer ({type(error).__name__})") from None
        if "S256" not in (metadata.code_challenge_methods_supported or ()):
            # The MCP authorization spec: no PKCE S256 advertised, no authorization.
            raise SignInUnavailable(upstream, "its authorization server does not offer PKCE S256")
        configured = upstream.auth.get("scopes")
        scope = (
            " ".join(str(s) for s in configured)
            if isinstance(configured, list) and configured
            else get_client_metadata_scopes(challenged_scope, resource_metadata, metadata, _GRANTS)
        )
        return Discovered(resource, str(metadata.issuer), metadata, scope)

    async def _authorization_server(
        self, upstream: Upstream, issuer: str, server_url: str
    ) -> OAuthMetadata:
        for candidate in build_oauth_authorization_server_metadata_discovery_urls(
            issuer, server_url
        ):
            served, metadata = await handle_auth_metadata_response(await self._get(candidate))
            if metadata is not None:
                # RFC 8414 §3.3: the metadata must be the issuer's own.
                if not issuers_match(str(metadata.issuer), issuer):
                    raise SignInUnavailable(upstream, "its authorization server's issuer differs")
                return metadata
            if not served:
                break
        raise SignInUnavailable(upstream, "its authorization server publishes no metadata")

    async def _client(self, upstream: Upstream, found: Discovered) -> tuple[str, str]:
        """A client id and secret ("" for a public client): the record's, or registered now."""
        configured = upstream.auth.get("clientId")
        if isinstance(configured, str):
            sealed = upstream.auth.get("clientSecretSealed")
            secret = self._vault.open_sealed(sealed)["clientSecret"] if sealed else ""
            return configured, secret
        metadata = found.metadata
        if should_use_client_metadata_url(metadata, self.metadata_url):
            assert self.metadata_url is not None
            return self.metadata_url, ""
        if metadata.registration_endpoint is None:
            raise SignInUnavailable(
                upstream,
                "its authorization server offers no dynamic client registration; "
                "set auth.clientId (and clientSecret) on the upstream",
            )
        methods = metadata.token_endpoint_auth_methods_supported
        # treadle authenticates with client_secret_post (oauth.client); RFC 8414's default
        # when the list is absent is client_secret_basic, which servers pair with post.
        method = "client_secret_post" if not methods or "client_secret_post" in methods else "none"
        if methods and method not in methods:
            raise SignInUnavailable(
                upstream, "its authorization server accepts no client authentication treadle uses"
            )
        request = create_client_registration_request(
            metadata,
            OAuthClientMetadata(
                redirect_uris=[AnyUrl(self._redirect_uri)],
                token_endpoint_auth_method=method,  # type: ignore[arg-type]
                grant_types=list(_GRANTS),
                response_types=["code"],
                scope=found.scope,
                client_name="treadle",
                application_type="web",
            ),
            found.issuer,
        )
        try:
            response = await self._http.send(request, follow_redirects=False)
            registered = await handle_registration_response(response)
        except OAuthRegistrationError:
            raise SignInUnavailable(
                upstream, "its authorization server refused to register treadle"
            ) from None
        except (httpx2.HTTPError, BlockedDestination):
            raise SignInUnavailable(upstream, "its registration endpoint did not answer") from None
        return registered.client_id, registered.client_secret or ""


def _url(upstream: Upstream) -> str:
    return str(upstream.transport["url"])
