"""Creating and revoking API keys: the rules every face (REST, CLI) shares.

A key is org-wide or restricted to one workspace of its org, and may expire. Its secret is
returned once, by `create_key`, and only its hash is kept. Revoking deletes it and bumps the
version of its scope, so every process refuses it at its next request (`ApiKeys.revoke`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from treadle.clock import iso, parse_iso, utcnow
from treadle.errors import NotFound, ValidationFailed
from treadle.store import Store
from treadle.store.records import ApiKey

# Past this, an expiry is a typo (a year 20260 or a timestamp in milliseconds).
_LATEST_EXPIRY = datetime(9999, 1, 1, tzinfo=UTC)


def expiry(text: str | None, field: str = "expiresAt") -> str | None:
    """An expiry as stored (ISO 8601 UTC, milliseconds, `Z`), refused unless in the future."""
    if text is None:
        return None
    try:
        moment = parse_iso(text)
    except ValueError:
        raise ValidationFailed(f"{field} must be an ISO 8601 timestamp", field=field) from None
    if moment <= utcnow():
        raise ValidationFailed(f"{field} must be in the future", field=field)
    if moment >= _LATEST_EXPIRY:
        raise ValidationFailed(f"{field} is too far in the future", field=field)
    return iso(moment)


async def create_key(
    store: Store,
    actor: str,
    org_id: str,
    *,
    name: str,
    workspace_id: str | None = None,
    expires_at: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once). The workspace must be one of the org's."""
    if workspace_id is not None and await store.workspaces.get(org_id, workspace_id) is None:
        raise NotFound("Workspace")
    async with store.db.write(actor) as txn:
        return await store.api_keys.create(
            txn, org_id, name=name, workspace_id=workspace_id, expires_at=expires_at
        )


async def manageable_key(
    store: Store, org_id: str, workspace_ids: set[str] | None, key_id: str
) -> ApiKey:
    """The key `key_id` if a caller reaching `workspace_ids` (None: the whole org) may see and
    revoke it. Keys a restricted caller does not list (org-wide ones, another workspace's)
    are as invisible by id: NotFound."""
    key = await store.api_keys.get(org_id, key_id)
    if key is None or workspace_ids not in (None, {key.workspace_id}):
        raise NotFound("API key")
    return key


async def revoke_key(store: Store, actor: str, key: ApiKey) -> None:
    """Revoke `key`; NotFound when another revocation took it first."""
    async with store.db.write(actor) as txn:
        if not await store.api_keys.revoke(txn, key):
            raise NotFound("API key")
