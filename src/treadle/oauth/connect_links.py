"""Signed, short-lived links to the connect page for one end user.

`trd_connect_v1_<payload>.<signature>`, HMAC-SHA256 under `vault.derive("treadle connect
links")`: any process sharing the instance secret verifies it; nobody can forge it or point it
at another end user. Like approval links, it carries no secret of its own beyond the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from treadle.clock import iso, parse_iso, utcnow
from treadle.store import Store

PREFIX = "trd_connect_v1_"
LIFETIME = timedelta(minutes=30)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class ConnectClaims:
    org_id: str
    workspace_id: str
    end_user_id: str
    expires_at: str


class ConnectLinks:
    def __init__(self, key: bytes, public_url: str, store: Store) -> None:
        self._key = key
        self._public_url = public_url.rstrip("/")
        self._store = store

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def token(self, claims: ConnectClaims) -> str:
        payload = _b64(
            json.dumps(
                {
                    "o": claims.org_id,
                    "w": claims.workspace_id,
                    "u": claims.end_user_id,
                    "p": "connect",
                    "e": claims.expires_at,
                }
            ).encode()
        )
        return f"{PREFIX}{payload}.{self._sign(payload)}"

    def verify(self, token: str, now: datetime | None = None) -> ConnectClaims | None:
        if not token.startswith(PREFIX) or len(token) > 1000:
            return None
        payload, _, signature = token[len(PREFIX) :].partition(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None
        try:
            raw = json.loads(_unb64(payload))
            claims = ConnectClaims(str(raw["o"]), str(raw["w"]), str(raw["u"]), str(raw["e"]))
            expires = parse_iso(claims.expires_at)
        except (ValueError, KeyError, TypeError):
            return None
        if raw.get("p") != "connect" or (now or utcnow()) >= expires:
            return None
        return claims

    def url(self, org_id: str, workspace_id: str, end_user_id: str) -> tuple[str, str]:
        """A fresh connect URL for the end user (its internal id) and when it expires."""
        expires_at = iso(utcnow() + LIFETIME)
        token = self.token(ConnectClaims(org_id, workspace_id, end_user_id, expires_at))
        return f"{self._public_url}/connect?{urlencode({'token': token})}", expires_at

    async def url_for_external(
        self, org_id: str, workspace_id: str, end_user_external_id: str | None
    ) -> str | None:
        """The connect URL of an end user known by external id, if such an end user exists."""
        if end_user_external_id is None:
            return None
        users = await self._store.end_users.list(org_id, workspace_id, None)
        found = next((u for u in users if u.external_id == end_user_external_id), None)
        return None if found is None else self.url(org_id, workspace_id, found.id)[0]

    async def url_for_id(self, org_id: str, end_user_id: str | None) -> str | None:
        if end_user_id is None:
            return None
        user = await self._store.end_users.get(org_id, end_user_id)
        return None if user is None else self.url(org_id, user.workspace_id, user.id)[0]
