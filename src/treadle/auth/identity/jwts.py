"""Signed JWTs from a provider, checked against its JWKS (shared by ID tokens and external
access tokens). Only asymmetric algorithms: a shared-secret (`HS256`) token could be forged by
anyone who holds the secret, and `none` by anyone at all."""

from __future__ import annotations

import time
from typing import Any

import httpx2
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from treadle.auth.identity.discovery import key_set
from treadle.errors import TreadleError

ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
# Clocks of the provider and treadle differ a little; a minute is the usual allowance.
LEEWAY_SECONDS = 60
MAX_TOKEN_LENGTH = 16 * 1024


class JwtRefused(TreadleError):
    """A token failed a check. `reason` is a stable word (`expired`, `wrong_issuer`, …)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token refused: {reason}")
        self.reason = reason


async def verified_claims(
    http: httpx2.AsyncClient, jwks_uri: str, private_allowed: bool, token: str
) -> dict[str, Any]:
    """The claims of `token` once its signature checks out against the provider's keys."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise JwtRefused("malformed")
    try:
        header = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise JwtRefused("malformed") from None
    if header.get("alg") not in ALGORITHMS:
        raise JwtRefused("algorithm_not_allowed")
    kid = header.get("kid")
    wanted = kid if isinstance(kid, str) else None
    keys = await key_set(http, jwks_uri, private_allowed, kid=wanted)
    try:
        return _decoded(token, keys)
    except JwtRefused as refused:
        if refused.reason != "bad_signature":
            raise
    # The cached key under this kid may have been replaced (or the provider redeployed with
    # new keys under the same names): one fresher set, within the refetch limit, decides.
    fresher = await key_set(http, jwks_uri, private_allowed, kid=wanted, refresh=True)
    if fresher is keys:
        raise JwtRefused("bad_signature")
    return _decoded(token, fresher)


def _decoded(token: str, keys: KeySet) -> dict[str, Any]:
    try:
        decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
    except InvalidKeyIdError:
        raise JwtRefused("unknown_key") from None
    except BadSignatureError:
        raise JwtRefused("bad_signature") from None
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise JwtRefused("malformed") from None
    return dict(decoded.claims)


def check_times(claims: dict[str, Any]) -> None:
    now = time.time()
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise JwtRefused("no_expiry")
    if exp + LEEWAY_SECONDS <= now:
        raise JwtRefused("expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf - LEEWAY_SECONDS > now:
        raise JwtRefused("not_yet_valid")


def audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []
