"""Signed, single-purpose tokens for hosted approval links.

`apr_link_v1_<payload>.<signature>`: the payload names one approval and an expiry; the
signature is HMAC-SHA256 under a key derived from the instance secret, so any process sharing
the data dir can verify it and nobody can forge or retarget it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime

from treadle.clock import parse_iso, utcnow

PREFIX = "apr_link_v1_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ApprovalLinks:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def token(self, approval_id: str, expires_at: str) -> str:
        payload = _b64(json.dumps({"a": approval_id, "p": "approve", "e": expires_at}).encode())
        return f"{PREFIX}{payload}.{self._sign(payload)}"

    def verify(self, token: str, approval_id: str, now: datetime | None = None) -> bool:
        """True only for an unexpired token minted for exactly this approval."""
        if not token.startswith(PREFIX) or len(token) > 1000:
            return False
        payload, _, signature = token[len(PREFIX) :].partition(".")
        # Bytes: compare_digest refuses str with non-ASCII characters (a forged token may hold any).
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return False
        try:
            claims = json.loads(_unb64(payload))
            expires = parse_iso(claims["e"])
        except (ValueError, KeyError, TypeError):
            return False
        return (
            claims.get("a") == approval_id
            and claims.get("p") == "approve"
            and (now or utcnow()) < expires
        )
