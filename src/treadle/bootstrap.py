"""First-run setup of a data dir: one org, a `default` workspace and an org-wide API key.

Idempotent: run again, it creates nothing twice. The first key is also kept in
`<data-dir>/api-key` (mode 0600) so `treadle init` can show it again; that file is inside the
same trust boundary as the database and its encryption key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from treadle.store import Store

DEFAULT_WORKSPACE = "default"
API_KEY_FILE = "api-key"


@dataclass(frozen=True, slots=True)
class InitResult:
    org_id: str
    workspace_id: str
    api_key: str | None
    created: bool


async def initialise(store: Store, data_dir: Path) -> InitResult:
    """The first org and its `default` workspace, created if missing.

    Several processes may run this at once on one empty database (replicas starting, two
    `treadle init`): the check and the creation share one transaction under the bootstrap
    lock, so exactly one org results and every process reports it."""
    org = await store.orgs.first()
    workspace = None if org is None else await store.workspaces.by_name(org.id, DEFAULT_WORKSPACE)
    created = False
    api_key: str | None = None
    if org is None or workspace is None:
        async with store.db.write("cli") as txn:
            org = await store.orgs.first_for_bootstrap(txn)
            if org is None:
                created = True
                org = await store.orgs.create(txn, "default")
                workspace = await store.workspaces.create(txn, org.id, DEFAULT_WORKSPACE)
                _key, api_key = await store.api_keys.create(txn, org.id, name="initial key")
                # Before the commit, so a process that waited for this one finds the file.
                _write_private(data_dir / API_KEY_FILE, api_key)
            else:
                workspace = await store.workspaces.by_name_in(txn, org.id, DEFAULT_WORKSPACE)
                if workspace is None:
                    workspace = await store.workspaces.create(txn, org.id, DEFAULT_WORKSPACE)
    if api_key is None:
        key_file = data_dir / API_KEY_FILE
        api_key = key_file.read_text().strip() if key_file.exists() else None
    return InitResult(org.id, workspace.id, api_key, created)


async def create_org(store: Store, name: str) -> InitResult:
    """Another org beside the first, with its own `default` workspace and org-wide API key.

    The key is returned once and not kept in the data dir: `api-key` stays the first org's.
    """
    async with store.db.write("cli") as txn:
        org = await store.orgs.create(txn, name)
        workspace = await store.workspaces.create(txn, org.id, DEFAULT_WORKSPACE)
        _key, api_key = await store.api_keys.create(txn, org.id, name="initial key")
    return InitResult(org.id, workspace.id, api_key, created=True)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
