"""What the integration, partial and policy pages share: reading posted fields, finding the
workspace integration a page is about, and placing a documented refusal beside its field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from treadle.api.auth import accessible_workspace
from treadle.catalog.model import Integration
from treadle.engine.installs import integration_of
from treadle.errors import ErrorCode, NotFound, Refusal
from treadle.store.records import Workspace, WorkspaceIntegration
from treadle.web.console.pages import HEADERS
from treadle.web.console.session import SignedIn

Fields = dict[str, list[str]]

# The few layout rules of these pages (two columns beside a preview, compact check lists),
# included by their templates after the console's own style.
STYLE = (Path(__file__).parent / "integration_pages.css").read_text()

_INDEX = re.compile(r"\[\d+\]$")


def one(fields: Fields, name: str, limit: int = 10_000) -> str:
    return (fields.get(name) or [""])[0].strip()[:limit]


def many(fields: Fields, name: str) -> list[str]:
    return [value for value in fields.get(name, []) if value]


def back(path: str) -> Response:
    return RedirectResponse(path, status_code=303, headers=HEADERS)


def path_id(request: Request, name: str) -> str:
    return str(request.path_params[name])[:100]


def field_error(
    refused: Refusal, default: str, named: dict[ErrorCode, str] | None = None
) -> dict[str, str]:
    """`{field: message}` for a refusal: the field it names (list positions dropped, so
    `allowedActions[2]` is shown at `allowedActions`), else the one its code belongs to,
    else `default`."""
    field = refused.extra.get("field")
    if not isinstance(field, str) or not field:
        field = (named or {}).get(refused.code, default)
    return {_INDEX.sub("", field): f"{refused.message} ({refused.code.value})"}


@dataclass(frozen=True, slots=True)
class Installed:
    """A page's workspace integration, with its workspace and catalog entry."""

    workspace: Workspace
    configured: WorkspaceIntegration
    integration: Integration


async def installed(request: Request, me: SignedIn, *, changing: bool = False) -> Installed:
    """The workspace integration of the path, as REST finds it: a foreign org's is 404, another
    workspace's 403 SCOPE_DENIED (for reading too: a workspace key sees only its own)."""
    gw, principal = me.gateway, me.principal
    workspace = await accessible_workspace(gw.store, principal, path_id(request, "workspace_id"))
    if changing:
        principal.check_scope(workspace.id)
    found = await gw.store.integrations.get(principal.org_id, path_id(request, "id"))
    if found is None or found.workspace_id != workspace.id:
        raise NotFound("Workspace integration")
    return Installed(
        workspace, found, integration_of(gw.catalog, found.integration_name, principal.org_id)
    )
