"""How integrations read a connection's secrets, whatever its type.

Conventions for `values` by connection type: `api_key` → `apiKey`; `bearer` → `token`;
`basic` → `username`, `password`; `oauth2` → `accessToken` (+ `refreshToken`, `expiresAt`,
kept up to date by the OAuth layer before an action runs); `custom` → whatever the
integration documents.
"""

from __future__ import annotations

from treadle.catalog.model import ConnectionCredentials
from treadle.errors import ConnectionCredentialsError

_TOKEN_KEYS = ("accessToken", "token", "apiKey")


def require_connection(connection: ConnectionCredentials | None) -> ConnectionCredentials:
    if connection is None:
        raise ConnectionCredentialsError("This action needs a connection with credentials")
    return connection


def bearer_token(connection: ConnectionCredentials | None) -> str:
    """The token to send as `Authorization: Bearer …` from any type that carries one."""
    found = require_connection(connection)
    for key in _TOKEN_KEYS:
        value = found.values.get(key)
        if value:
            return value
    raise ConnectionCredentialsError(
        f"Connection '{found.external_id}' holds no token; re-create it with one"
    )


def base_url(connection: ConnectionCredentials | None, default: str) -> str:
    """The API base URL: the connection's override (e.g. GitHub Enterprise) or the default."""
    chosen = connection.base_url if connection is not None and connection.base_url else default
    return chosen.rstrip("/")
