"""Creating a connection: the rules every face applies (REST and the console alike).

The caller has already checked that its principal may change the workspace (or, for an
org-level connection, is org-wide); here the integration must exist, an end user needs a
workspace and must be one of its end users. Secret values go in and are never answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from treadle.catalog.registry import Catalog
from treadle.errors import ValidationFailed
from treadle.store import Store
from treadle.store.records import Connection


@dataclass(frozen=True, slots=True)
class NewConnection:
    integration_name: str
    type: str
    display_name: str
    external_id: str
    values: dict[str, str]
    workspace_id: str | None = None
    # The end user's externalId (as the REST body names it), not the internal id.
    end_user_external_id: str | None = None
    base_url: str | None = None


async def create_connection(
    store: Store, catalog: Catalog, actor: str, org_id: str, new: NewConnection
) -> Connection:
    if catalog.get(new.integration_name, org_id) is None:
        raise ValidationFailed(
            f"Unknown integration '{new.integration_name}'", field="integrationName"
        )
    end_user_id = None
    if new.end_user_external_id is not None:
        if new.workspace_id is None:
            raise ValidationFailed("endUserId needs a workspaceId", field="workspaceId")
        users = await store.end_users.list(org_id, new.workspace_id, None)
        match = [u for u in users if u.external_id == new.end_user_external_id]
        if not match:
            raise ValidationFailed(
                "No end user with this externalId in the workspace", field="endUserId"
            )
        end_user_id = match[0].id
    async with store.db.write(actor) as txn:
        return await store.connections.create(
            txn,
            org_id=org_id,
            workspace_id=new.workspace_id,
            end_user_id=end_user_id,
            integration_name=new.integration_name,
            type=new.type,
            display_name=new.display_name,
            external_id=new.external_id,
            values=dict(new.values),
            base_url=new.base_url,
        )
