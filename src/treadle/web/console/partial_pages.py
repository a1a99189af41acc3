"""A workspace integration's partials in the console: create, edit, delete, and beside the
form the tool exactly as a model will see it.

The preview is built by the MCP face's own `build_toolset` from the workspace's configuration
with the draft in place of the stored partial (and, when the draft is a default, without the
other default of its scope, which saving would clear), so its name, description and pruned
schema are what `tools/list` answers once the partial is saved. It is computed by a POST that
changes nothing: the form's "Preview" button, or htmx while typing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from mcp.types import Tool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from treadle.api.bodies import parse
from treadle.api.partials import CreatePartial, UpdatePartial, changed_partial, new_partial
from treadle.catalog.model import Action
from treadle.clock import utcnow
from treadle.engine.partials import check_values
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.mcp.toolset import build_toolset
from treadle.store.records import Partial
from treadle.web.console.forms import (
    STYLE,
    Fields,
    Installed,
    back,
    field_error,
    installed,
    many,
    one,
    path_id,
)
from treadle.web.console.pages import form_page, page, render
from treadle.web.console.partial_form import (
    EXTRA,
    ReadBack,
    ValueField,
    extra_keys,
    read_values,
    shown_values,
    value_fields,
)
from treadle.web.console.session import SignedIn

_DRAFT_ID = "draft"


@dataclass(frozen=True, slots=True)
class Draft:
    """A partial as the form describes it (saved or not)."""

    record: Partial
    read: ReadBack
    preview_action: str


@dataclass(frozen=True, slots=True)
class Preview:
    action: str
    # None: the action is not listed (outside the integration's allowed actions).
    tool: dict[str, Any] | None
    problems: list[str]


def _scope_actions(found: Installed, action_name: str | None) -> list[Action]:
    if action_name is None:
        return list(found.integration.actions)
    action = found.integration.action(action_name)
    if action is None:
        raise ValidationFailed(
            f"'{found.integration.name}' has no action '{action_name[:100]}'", field="actionName"
        )
    return [action]


async def _stored(me: SignedIn, found: Installed, partial_id: str) -> Partial:
    """A partial of this workspace integration (another's answers as missing)."""
    partial = await me.gateway.store.partials.get(me.principal.org_id, partial_id)
    configured = found.configured
    if (
        partial is None
        or partial.workspace_id != found.workspace.id
        or partial.integration_name != configured.integration_name
        or partial.integration_alias not in (None, configured.alias)
    ):
        raise NotFound("Partial")
    return partial


def _same_scope(a: Partial, b: Partial) -> bool:
    return (a.integration_name, a.integration_alias, a.action_name) == (
        b.integration_name,
        b.integration_alias,
        b.action_name,
    )


async def preview(me: SignedIn, found: Installed, draft: Partial, action_name: str) -> Tool | None:
    """The tool `action_name` of this integration as a model would list it with `draft` saved."""
    gw = me.gateway
    config = await gw.store.config.workspace(me.principal.org_id, found.workspace.id)
    if config is None:
        raise NotFound("Workspace")
    partials = [
        p
        for p in config.partials
        if p.id != draft.id and not (draft.is_default and p.is_default and _same_scope(p, draft))
    ]
    partials.append(draft)
    toolset = build_toolset(gw.catalog, None, list(config.integrations), partials, config.policies)
    for target in toolset.targets.values():
        if target.configured.id == found.configured.id and target.action.name == action_name:
            return toolset.by_name.get(target.name) if target.listed else None
    return None


def _tool_json(tool: Tool | None) -> dict[str, Any] | None:
    # As `tools/list` sends it.
    return None if tool is None else tool.model_dump(mode="json", by_alias=True, exclude_none=True)


def _draft(
    found: Installed,
    me: SignedIn,
    fields: Fields,
    stored: Partial | None,
    value_form: list[ValueField],
) -> Draft:
    read = read_values(value_form, fields, many(fields, "enforced"))
    if stored is not None:
        alias, action_name, created = (
            stored.integration_alias,
            stored.action_name,
            stored.created_at,
        )
    else:
        alias = found.configured.alias if one(fields, "aliasOnly") else None
        action_name = one(fields, "actionName", 100) or None
        created = utcnow().isoformat()
    actions = [a.name for a in _scope_actions(found, action_name)]
    chosen = action_name or one(fields, "previewAction", 100)
    if chosen not in actions:
        allowed = [a for a in actions if found.configured.allows(a)]
        chosen = (allowed or actions)[0]
    record = Partial(
        id=stored.id if stored is not None else _DRAFT_ID,
        org_id=me.principal.org_id,
        workspace_id=found.workspace.id,
        integration_name=found.configured.integration_name,
        integration_alias=alias,
        action_name=action_name,
        name=one(fields, "name", 100),
        description=one(fields, "description", 500) or None,
        values=read.values,
        # An enforced key without a value is refused on saving; the preview leaves it out.
        enforced_keys=tuple(k for k in read.enforced if k in read.values),
        is_default=bool(one(fields, "isDefault")),
        created_at=created,
        updated_at=created,
    )
    return Draft(record, read, chosen)


def _placed(refused: Refusal, value_form: list[ValueField], enforced: list[str]) -> dict[str, str]:
    """Where the form shows a refusal: at the value's field (for `enforcedKeys[i]`, the field
    of the i-th enforced key), at "Other values" for a key without a field, else its field."""
    errors = field_error(refused, "name", {ErrorCode.DUPLICATE: "name"})
    field = str(refused.extra.get("field") or "")
    message = next(iter(errors.values()))
    key: str | None = None
    if field.startswith("values."):
        key = field.removeprefix("values.")
    elif field.startswith("enforcedKeys[") and field.endswith("]"):
        index = field.removeprefix("enforcedKeys[").removesuffix("]")
        if index.isdigit() and int(index) < len(enforced):
            key = enforced[int(index)]
    elif field == "values":
        return {EXTRA: message}
    if key is None:
        return errors
    named = {f.key: f.name for f in value_form}
    return {named.get(key, EXTRA): message}


def _check(found: Installed, draft: Draft, value_form: list[ValueField]) -> dict[str, str]:
    """The engine's checks of the draft's values, placed beside their fields."""
    record = draft.record
    try:
        check_values(found.integration, record.action_name, record.values, draft.read.enforced)
    except Refusal as refused:
        return _placed(refused, value_form, draft.read.enforced)
    return {}


@dataclass(frozen=True, slots=True)
class Shown:
    """What the page shows: the partial (None: a new one), its scope's action (None: every
    action), the form's texts and ticks, and the draft they stand for."""

    stored: Partial | None
    action_name: str | None
    form: dict[str, str]
    shown: dict[str, str]
    enforced: list[str]
    draft: Partial
    preview_action: str


async def _view(
    request: Request,
    me: SignedIn,
    found: Installed,
    state: Shown,
    *,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    stored, action_name, draft = state.stored, state.action_name, state.draft
    value_form = value_fields(_scope_actions(found, action_name))
    tool = _tool_json(await preview(me, found, draft, state.preview_action))
    errors = errors or {}
    shown_preview = Preview(state.preview_action, tool, list(errors.values()))
    template = "partial.html"
    if request.headers.get("hx-request") == "true":
        template = "partial_preview.html"  # htmx swaps the preview alone
    base = f"/console/workspaces/{found.workspace.id}/integrations/{found.configured.id}"
    return await render(
        request,
        template,
        me,
        title=(f"Partial {stored.name}" if stored is not None else "New partial")
        + f" · {found.configured.alias}",
        section="workspaces",
        extra_style=STYLE,
        workspace=found.workspace,
        configured=found.configured,
        integration=found.integration,
        stored=stored,
        action_name=action_name,
        actions=found.integration.actions,
        value_form=value_form,
        extra_keys=extra_keys(value_form, draft.values),
        shown=state.shown,
        enforced=state.enforced,
        preview=shown_preview,
        draft=draft,
        base=base,
        form=state.form,
        errors=errors,
        error=next(iter(errors.values()), None),
        flash=request.query_params.get("done"),
        status=status,
    )


def _stored_form(stored: Partial | None, found: Installed) -> dict[str, str]:
    if stored is None:
        return {"name": "", "description": "", "isDefault": "on", "aliasOnly": "on"}
    return {
        "name": stored.name,
        "description": stored.description or "",
        "isDefault": "on" if stored.is_default else "",
        "aliasOnly": "on" if stored.integration_alias is not None else "",
    }


async def _show(
    request: Request, me: SignedIn, found: Installed, stored: Partial | None
) -> Response:
    if stored is None:
        action_name = request.query_params.get("action", "")[:100] or None
    else:
        action_name = stored.action_name
    value_form = value_fields(_scope_actions(found, action_name))
    values = stored.values if stored is not None else {}
    enforced = list(stored.enforced_keys) if stored is not None else []
    form = _stored_form(stored, found)
    posted: Fields = {name: [value] for name, value in form.items()}
    posted.update({name: [text] for name, text in shown_values(value_form, values).items()})
    posted["enforced"] = enforced
    if action_name is not None:
        posted["actionName"] = [action_name]
    draft = _draft(found, me, posted, stored, value_form)
    state = Shown(
        stored,
        action_name,
        form,
        shown_values(value_form, values),
        enforced,
        draft.record,
        draft.preview_action,
    )
    return await _view(request, me, found, state)


async def _new(request: Request, me: SignedIn) -> Response:
    return await _show(request, me, await installed(request, me), None)


new_page = page(_new)


async def _edit(request: Request, me: SignedIn) -> Response:
    found = await installed(request, me)
    return await _show(request, me, found, await _stored(me, found, path_id(request, "pid")))


edit_page = page(_edit)


def _posted_form(fields: Fields) -> dict[str, str]:
    return {
        name: one(fields, name, 500) for name in ("name", "description", "isDefault", "aliasOnly")
    }


async def _answer(
    request: Request,
    me: SignedIn,
    found: Installed,
    fields: Fields,
    stored: Partial | None,
    *,
    save: bool,
) -> Response:
    action_name = stored.action_name if stored is not None else one(fields, "actionName") or None
    value_form = value_fields(_scope_actions(found, action_name))
    draft = _draft(found, me, fields, stored, value_form)
    errors = {**_check(found, draft, value_form), **draft.read.errors}
    view = Shown(
        stored,
        action_name,
        _posted_form(fields),
        draft.read.shown,
        draft.read.enforced,
        draft.record,
        draft.preview_action,
    )
    if not save:
        return await _view(request, me, found, view, errors=errors)
    if draft.read.errors:
        return await _view(request, me, found, view, errors=errors, status=400)
    record = draft.record
    try:
        if stored is None:
            body: dict[str, Any] = {
                "workspaceId": found.workspace.id,
                "integrationName": record.integration_name,
                "integrationAlias": record.integration_alias,
                "actionName": record.action_name,
            }
        else:
            body = {}
        body.update(
            name=record.name,
            description=record.description,
            values=record.values,
            enforcedKeys=draft.read.enforced,
            isDefault=record.is_default,
        )
        gw, principal = me.gateway, me.principal
        if stored is None:
            saved = await new_partial(gw, principal, parse(CreatePartial, body))
        else:
            saved = await changed_partial(gw, principal, stored, parse(UpdatePartial, body))
    except Refusal as refused:
        errors = _placed(refused, value_form, draft.read.enforced)
        return await _view(request, me, found, view, errors=errors, status=refused.code.status)
    where = f"/console/workspaces/{found.workspace.id}/integrations/{found.configured.id}"
    return back(f"{where}/partials/{saved.id}?" + urlencode({"done": f"Saved {saved.name}."}))


async def _create(request: Request, me: SignedIn, fields: Fields) -> Response:
    found = await installed(request, me, changing=True)
    return await _answer(request, me, found, fields, None, save=True)


create = form_page(_create)


async def _update(request: Request, me: SignedIn, fields: Fields) -> Response:
    found = await installed(request, me, changing=True)
    stored = await _stored(me, found, path_id(request, "pid"))
    return await _answer(request, me, found, fields, stored, save=True)


update = form_page(_update)


async def _preview(request: Request, me: SignedIn, fields: Fields) -> Response:
    # Reading only, but a POST with the form's CSRF like the rest: it reads the whole form.
    found = await installed(request, me)
    partial_id = one(fields, "partialId", 100)
    stored = await _stored(me, found, partial_id) if partial_id else None
    return await _answer(request, me, found, fields, stored, save=False)


preview_page = form_page(_preview)


async def _delete(request: Request, me: SignedIn, _fields: Fields) -> Response:
    found = await installed(request, me, changing=True)
    stored = await _stored(me, found, path_id(request, "pid"))
    async with me.gateway.store.db.write(me.principal.actor) as txn:
        await me.gateway.store.partials.delete(txn, stored)
    where = f"/console/workspaces/{found.workspace.id}/integrations/{found.configured.id}"
    return back(f"{where}?" + urlencode({"done": f"Deleted {stored.name}."}) + "#partials")


delete = form_page(_delete)

_BASE = "/console/workspaces/{workspace_id}/integrations/{id}/partials"
routes: list[BaseRoute] = [
    Route(f"{_BASE}/new", new_page, methods=["GET"]),
    Route(_BASE, create, methods=["POST"]),
    Route(f"{_BASE}/preview", preview_page, methods=["POST"]),
    Route(f"{_BASE}/{{pid}}", edit_page, methods=["GET"]),
    Route(f"{_BASE}/{{pid}}", update, methods=["POST"]),
    Route(f"{_BASE}/{{pid}}/delete", delete, methods=["POST"]),
]
