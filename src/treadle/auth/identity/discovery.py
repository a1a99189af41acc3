"""Provider documents fetched through the outbound guard and cached: OpenID Connect discovery
(or RFC 8414 metadata) and JSON Web Key Sets.

Fetches go through the gateway's shared client, so a provider on a private address is
refused unless its configuration allows private networks. Documents are cached for five
minutes per process (a provider's keys rotate on the scale of days); a token signed by a key
the cached set lacks, or whose signature the cached key under its `kid` does not verify (a
key replaced under the same `kid`, a provider redeployed with new keys), fetches the set
again, at most once every ten seconds per URL, so a stream of tokens with invented `kid`s or
forged signatures cannot make treadle hammer the provider.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx2
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from treadle.errors import TreadleError
from treadle.net import BlockedDestination, allow_private_network

DOCUMENT_SECONDS = 300.0
REFETCH_SECONDS = 10.0
FETCH_TIMEOUT = 10.0
MAX_DOCUMENT_BYTES = 256 * 1024
_MAX_CACHED = 256


class ProviderUnavailable(TreadleError):
    """A provider document could not be fetched or is not what it must be. `reason` is one
    of treadle's own words, never the provider's text."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"identity provider document unavailable: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    jwks_uri: str
    token_auth_methods: tuple[str, ...]


@dataclass(slots=True)
class _Cached:
    value: Any
    fetched: float


# Keyed by (URL, whether private networks were allowed): a document fetched for a provider
# allowed to reach an intranet must never answer for one that is not (the guard's check).
_cache: OrderedDict[tuple[str, bool], _Cached] = OrderedDict()


def _remember(url: str, private_allowed: bool, value: Any) -> None:
    key = (url, private_allowed)
    _cache[key] = _Cached(value, time.monotonic())
    _cache.move_to_end(key)
    while len(_cache) > _MAX_CACHED:
        _cache.popitem(last=False)


def _recent(url: str, private_allowed: bool, seconds: float) -> Any | None:
    cached = _cache.get((url, private_allowed))
    if cached is None or time.monotonic() - cached.fetched > seconds:
        return None
    return cached.value


async def _fetch_json(http: httpx2.AsyncClient, url: str, private_allowed: bool) -> dict[str, Any]:
    try:
        with allow_private_network(private_allowed):
            response = await http.get(
                url, headers={"Accept": "application/json"}, timeout=FETCH_TIMEOUT
            )
    except BlockedDestination:
        raise ProviderUnavailable("destination_not_allowed") from None
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError) as error:
        # A document may name an endpoint that is no URL at all: the provider's fault.
        raise ProviderUnavailable(type(error).__name__) from None
    if response.status_code != 200:
        raise ProviderUnavailable(f"http_{response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise ProviderUnavailable("document_too_large")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderUnavailable("not_json")
    return body


def same_issuer(a: str, b: str) -> bool:
    """Issuers compare as strings (OpenID Connect Discovery §4.3), up to a trailing slash
    that providers and their administrators add or leave out."""
    return a.rstrip("/") == b.rstrip("/")


async def provider_metadata(
    http: httpx2.AsyncClient, issuer: str, private_allowed: bool
) -> ProviderMetadata:
    """The issuer's OpenID configuration, falling back to its RFC 8414 metadata (authorization
    servers that are not OpenID providers). Its `issuer` must be the one configured, or a
    provider could speak for another (a mix-up)."""
    base = issuer.rstrip("/")
    urls = (
        f"{base}/.well-known/openid-configuration",
        f"{base}/.well-known/oauth-authorization-server",
    )
    for url in urls:
        cached = _recent(url, private_allowed, DOCUMENT_SECONDS)
        if isinstance(cached, ProviderMetadata):
            return cached
    failure: ProviderUnavailable | None = None
    for url in urls:
        try:
            body = await _fetch_json(http, url, private_allowed)
        except ProviderUnavailable as unavailable:
            failure = failure or unavailable
            continue
        metadata = _metadata(body, issuer)
        _remember(url, private_allowed, metadata)
        return metadata
    assert failure is not None
    raise failure


def _metadata(body: dict[str, Any], issuer: str) -> ProviderMetadata:
    stated = body.get("issuer")
    if not isinstance(stated, str) or not same_issuer(stated, issuer):
        raise ProviderUnavailable("issuer_mismatch")
    jwks_uri = body.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
        raise ProviderUnavailable("no_jwks_uri")

    def endpoint(name: str) -> str | None:
        value = body.get(name)
        return (
            value if isinstance(value, str) and value.startswith(("https://", "http://")) else None
        )

    methods = body.get("token_endpoint_auth_methods_supported")
    return ProviderMetadata(
        issuer=stated,
        authorization_endpoint=endpoint("authorization_endpoint"),
        token_endpoint=endpoint("token_endpoint"),
        jwks_uri=jwks_uri,
        token_auth_methods=tuple(m for m in methods if isinstance(m, str))
        if isinstance(methods, list)
        else ("client_secret_basic",),
    )


async def key_set(
    http: httpx2.AsyncClient,
    jwks_uri: str,
    private_allowed: bool,
    *,
    kid: str | None,
    refresh: bool = False,
) -> KeySet:
    """The provider's keys; fetched again when `kid` is not among the cached ones (a key
    rotation) or when `refresh` says the cached keys failed a signature, within the refetch
    limit. Within it the cached set is returned as it is."""
    cached = _recent(jwks_uri, private_allowed, DOCUMENT_SECONDS)
    if isinstance(cached, KeySet) and not refresh and (kid is None or _has_kid(cached, kid)):
        return cached
    recently = _recent(jwks_uri, private_allowed, REFETCH_SECONDS)
    if isinstance(cached, KeySet) and recently is not None:
        return cached
    body = await _fetch_json(http, jwks_uri, private_allowed)
    try:
        keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError):
        raise ProviderUnavailable("bad_jwks") from None
    _remember(jwks_uri, private_allowed, keys)
    return keys


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


def forget(url_prefix: str) -> None:
    """Drop the cached documents under `url_prefix` (an issuer whose configuration changed)."""
    for key in [k for k in _cache if k[0].startswith(url_prefix)]:
        del _cache[key]
