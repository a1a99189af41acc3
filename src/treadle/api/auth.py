"""Bearer API keys: who is calling, and which workspaces they may touch."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from treadle.errors import ErrorCode, NotFound, Refusal
from treadle.store import Store
from treadle.store.records import ApiKey, Workspace


@dataclass(frozen=True, slots=True)
class Principal:
    key: ApiKey

    @property
    def org_id(self) -> str:
        return self.key.org_id

    @property
    def actor(self) -> str:
        return f"api_key:{self.key.id}"

    @property
    def workspace_ids(self) -> set[str] | None:
        """None: every workspace of the org."""
        return None if self.key.workspace_id is None else {self.key.workspace_id}

    def check_workspace(self, workspace_id: str) -> None:
        if self.key.workspace_id is not None and self.key.workspace_id != workspace_id:
            raise Refusal(ErrorCode.SCOPE_DENIED, "This API key is restricted to another workspace")

    def check_scope(self, workspace_id: str | None) -> None:
        """A resource of one workspace needs access to it; an org-wide one an org-wide key."""
        if workspace_id is None:
            self.check_org_wide()
        else:
            self.check_workspace(workspace_id)

    def check_org_wide(self) -> None:
        if self.key.workspace_id is not None:
            raise Refusal(ErrorCode.SCOPE_DENIED, "This operation needs an org-wide API key")


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(store: Store, request: Request) -> Principal:
    token = bearer_token(request)
    key = await store.config.api_key(token) if token else None
    if key is None:
        raise Refusal(ErrorCode.UNAUTHORIZED, "A valid API key is required (Authorization: Bearer)")
    return Principal(key)


async def accessible_workspace(store: Store, principal: Principal, workspace_id: str) -> Workspace:
    """The workspace if it exists in the caller's org (404 otherwise, foreign or not) and the
    key may use it (403 SCOPE_DENIED)."""
    config = await store.config.workspace(principal.org_id, workspace_id)
    if config is None:
        raise NotFound("Workspace")
    principal.check_workspace(config.workspace.id)
    return config.workspace


async def workspace_query(store: Store, principal: Principal, request: Request) -> str | None:
    """The `workspaceId` filter of a list endpoint, checked as `accessible_workspace` does;
    None when the caller gave none."""
    workspace_id = request.query_params.get("workspaceId")
    if workspace_id is not None:
        await accessible_workspace(store, principal, workspace_id)
    return workspace_id
