"""The end user a signed-in identity stands for: found by externalId in the workspace, or
created there on first sign-in when the provider allows it."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from treadle.engine.end_user_ids import end_user_id_problem
from treadle.errors import ErrorCode, Refusal
from treadle.store import Store, schema
from treadle.store.records import EndUser


@dataclass(frozen=True, slots=True)
class Resolved:
    end_user: EndUser | None
    created: bool


class NoEndUser(Refusal):
    """The identity is valid but names nobody treadle may act as. `reason`: `end_user_unknown`
    (no such end user, and the provider may not create one) or `claim_not_an_id`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(ErrorCode.FORBIDDEN, message, reason=reason)
        self.reason = reason


async def _find(store: Store, workspace_id: str, external_id: str) -> EndUser | None:
    table = schema.end_users
    async with store.db.read() as conn:
        found = (
            await conn.execute(
                sa.select(table.c.id, table.c.org_id).where(
                    table.c.workspace_id == workspace_id, table.c.external_id == external_id
                )
            )
        ).first()
    if found is None:
        return None
    return await store.end_users.get(found.org_id, found.id)


async def resolve_end_user(
    store: Store,
    *,
    org_id: str,
    workspace_id: str,
    external_id: str,
    email: str | None,
    allow_create: bool,
    actor: str,
) -> Resolved:
    if end_user_id_problem(external_id) is not None:
        raise NoEndUser("claim_not_an_id", "The identity's claim is not a valid end-user id")
    found = await _find(store, workspace_id, external_id)
    if found is not None:
        return Resolved(found, False)
    if not allow_create:
        raise NoEndUser(
            "end_user_unknown", "No end user with this identity, and none may be created"
        )
    try:
        async with store.db.write(actor) as txn:
            user = await store.end_users.create(
                txn,
                org_id=org_id,
                workspace_id=workspace_id,
                external_id=external_id,
                display_name=None,
                email=email,
                metadata=None,
            )
    except Refusal as refused:
        if refused.code is not ErrorCode.DUPLICATE:
            raise
        # Two first sign-ins at once (any process): the other one created the end user.
        again = await _find(store, workspace_id, external_id)
        if again is None:
            raise
        return Resolved(again, False)
    return Resolved(user, True)
