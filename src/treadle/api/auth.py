"""Bearer API keys: who is calling, and which workspaces they may touch."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from treadle.errors import ErrorCode, NotFound, Refusal
from treadle.observability.logs import note
from treadle.store import Store
from treadle.store.config_cache import ConfigSnapshot, WorkspaceConfig
from treadle.store.records import ApiKey, Workspace


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API key, and the one rule of what it reaches.

    An org-wide key reaches everything of its org. A key restricted to a workspace:
    - reads (lists and gets) its workspace's resources and the org-level ones, those of no
      workspace (org-wide approval policies and connections, OAuth apps, org-level activity):
      they govern or serve its workspace too (`may_read`, `check_read`);
    - changes only its workspace's resources; org-level ones need an org-wide key
      (`check_scope`);
    - never sees another workspace's resources: lists leave them out, and by id they answer
      403 SCOPE_DENIED.
    A foreign org's resources answer like missing ones, whatever the key.
    """

    key: ApiKey
    # The configuration as this request's one version read found it: the key was looked up
    # at it, and so are the workspaces the request names, down to the pipeline (on
    # PostgreSQL each version read is a round trip). None: a principal made outside a
    # request (the console's session), whose lookups read the version themselves.
    config: ConfigSnapshot | None = None

    @property
    def org_id(self) -> str:
        return self.key.org_id

    @property
    def actor(self) -> str:
        return f"api_key:{self.key.id}"

    @property
    def workspace_ids(self) -> set[str] | None:
        """The list filter of `may_read`: None for every workspace of the org, else the key's
        own, to which the stores add the org-level rows (those of no workspace)."""
        return None if self.key.workspace_id is None else {self.key.workspace_id}

    def may_read(self, workspace_id: str | None) -> bool:
        """Whether a resource of `workspace_id` (None: org-level) is visible to this key."""
        return workspace_id is None or self.key.workspace_id in (None, workspace_id)

    def check_read(self, workspace_id: str | None) -> None:
        """Before answering a resource by id: another workspace's is 403 SCOPE_DENIED."""
        if not self.may_read(workspace_id):
            raise Refusal(ErrorCode.SCOPE_DENIED, "This API key is restricted to another workspace")

    def check_workspace(self, workspace_id: str) -> None:
        if self.key.workspace_id is not None and self.key.workspace_id != workspace_id:
            raise Refusal(ErrorCode.SCOPE_DENIED, "This API key is restricted to another workspace")

    def check_scope(self, workspace_id: str | None) -> None:
        """Before changing a resource: one of a workspace needs access to it; an org-level one
        (None) an org-wide key."""
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


async def refused_reason(store: Store, token: str | None) -> str:
    """Why a bearer was refused, for the log only: missing, expired or invalid_token (one
    more read, on the refusal path alone)."""
    if not token:
        return "missing"
    found = await store.api_keys.authenticate(token)
    return "expired" if found is not None and found.expired() else "invalid_token"


async def authenticate(
    store: Store, request: Request, snapshot: ConfigSnapshot | None = None
) -> Principal:
    """The caller, looked up at `snapshot` (default: the version read now). A key not found
    at an assumed snapshot is looked up again at the current version before the refusal."""
    token = bearer_token(request)
    if snapshot is None:
        snapshot = await store.config.snapshot()
    key = await snapshot.api_key(token) if token else None
    if key is None and token and not snapshot.confirmed:
        snapshot = await snapshot.confirm()
        key = await snapshot.api_key(token)
    if key is None:
        # The log line says why, never with the token; the answer is the same either way.
        note(authReason=await refused_reason(store, token))
        raise Refusal(ErrorCode.UNAUTHORIZED, "A valid API key is required (Authorization: Bearer)")
    return Principal(key, snapshot)


async def accessible_config(
    store: Store, principal: Principal, workspace_id: str
) -> WorkspaceConfig:
    """The workspace's configuration if it exists in the caller's org (404 otherwise, foreign
    or not) and the key may use it (403 SCOPE_DENIED)."""
    source = store.config if principal.config is None else principal.config
    config = await source.workspace(principal.org_id, workspace_id)
    if config is None:
        raise NotFound("Workspace")
    principal.check_workspace(config.workspace.id)
    return config


async def accessible_workspace(store: Store, principal: Principal, workspace_id: str) -> Workspace:
    """`accessible_config`'s workspace."""
    return (await accessible_config(store, principal, workspace_id)).workspace


async def workspace_query(store: Store, principal: Principal, request: Request) -> str | None:
    """The `workspaceId` filter of a list endpoint, checked as `accessible_workspace` does;
    None when the caller gave none."""
    workspace_id = request.query_params.get("workspaceId")
    if workspace_id is not None:
        await accessible_workspace(store, principal, workspace_id)
    return workspace_id
