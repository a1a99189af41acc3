"""GitHub: issues, issue comments, pull requests and the repositories the token can reach.

REST API conventions (https://docs.github.com/rest): `Authorization: Bearer`, the versioned
JSON media type and `X-GitHub-Api-Version`; failures are 4xx with `message` (and `errors` on
422), coded here by status (`not_found`, `validation_failed`, ...). Lists page with `per_page`
and `page`, and the `Link` header's `rel="next"` says whether another page exists. Rate limits
are 403 or 429 with `Retry-After`, or with `x-ratelimit-remaining: 0` and the reset time.
Outputs are GitHub's own objects, unchanged; lists are wrapped in an object with `next_page`.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2

from treadle.catalog.model import Action, ActionContext, AuthKind, Integration, JSONObject
from treadle.catalog.providers import retry
from treadle.catalog.providers.annotations import CREATE, READ, UPDATE
from treadle.catalog.providers.failures import http_failure, invalid_response, status_code_name
from treadle.catalog.providers.rest import (
    Provider,
    RateLimit,
    RestClient,
    pick,
    read_json,
    segment,
)
from treadle.catalog.providers.schema import SETTINGS_SCHEMA, choice, object_schema

API_VERSION = "2022-11-28"
# GitHub's advice for a secondary rate limit that names no time: wait at least a minute.
SECONDARY_LIMIT_WAIT = 60.0


def _body(response: httpx2.Response) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _check(response: httpx2.Response) -> None:
    if response.is_success:
        return
    body = _body(response)
    detail: JSONObject = {}
    if isinstance(body.get("message"), str):
        detail["message"] = body["message"]
    if isinstance(body.get("errors"), list):
        detail["errors"] = body["errors"]
    if isinstance(body.get("documentation_url"), str):
        detail["documentation_url"] = body["documentation_url"]
    raise http_failure("GitHub", response, status_code_name(response.status_code), detail)


def _rate_limit(response: httpx2.Response) -> RateLimit | None:
    if response.status_code not in (403, 429):
        return None
    wait = retry.retry_after_seconds(response.headers)
    if wait is not None:
        return RateLimit(wait)
    if response.headers.get("x-ratelimit-remaining") == "0":
        reset = response.headers.get("x-ratelimit-reset", "")
        if reset.isascii() and reset.isdigit():
            return RateLimit(max(0.0, int(reset) - time.time()))
        return RateLimit(SECONDARY_LIMIT_WAIT)
    message = str(_body(response).get("message", "")).lower()
    if response.status_code == 429 or "rate limit" in message:
        return RateLimit(SECONDARY_LIMIT_WAIT)
    # Any other 403 is a permission problem, reported as such.
    return None


GITHUB = Provider(
    name="GitHub",
    default_base_url="https://api.github.com",
    check=_check,
    rate_limit=_rate_limit,
    headers={"accept": "application/vnd.github+json", "x-github-api-version": API_VERSION},
)


def _repo(data: JSONObject) -> str:
    owner, name = data["repository"].split("/", 1)
    return f"/repos/{segment(owner)}/{segment(name)}"


def _issue(data: JSONObject) -> str:
    return f"{_repo(data)}/issues/{segment(data['issue_number'])}"


async def _list(ctx: ActionContext, path: str, params: JSONObject, key: str) -> JSONObject:
    response = await RestClient(ctx, GITHUB).send("GET", path, params=params)
    items = read_json(GITHUB, response)
    if not isinstance(items, list):
        raise invalid_response("GitHub", response)
    return {key: items, "next_page": _next_page(response)}


def _next_page(response: httpx2.Response) -> int | None:
    link = response.links.get("next")
    if link is None:
        return None
    page = httpx2.URL(link["url"]).params.get("page", "")
    return int(page) if page.isascii() and page.isdigit() else None


def _paging(data: JSONObject) -> JSONObject:
    return {"per_page": data.get("per_page", 30), "page": data.get("page", 1)}


async def create_issue(ctx: ActionContext, data: JSONObject) -> JSONObject:
    body = pick(data, "title", "body", "labels", "assignees", "milestone")
    return await RestClient(ctx, GITHUB).json_object("POST", f"{_repo(data)}/issues", body=body)


async def get_issue(ctx: ActionContext, data: JSONObject) -> JSONObject:
    return await RestClient(ctx, GITHUB).json_object("GET", _issue(data))


async def list_issues(ctx: ActionContext, data: JSONObject) -> JSONObject:
    params = {
        **pick(data, "state", "assignee", "creator", "since", "sort", "direction"),
        **_paging(data),
    }
    if "labels" in data:
        params["labels"] = ",".join(data["labels"])
    return await _list(ctx, f"{_repo(data)}/issues", params, "issues")


async def update_issue(ctx: ActionContext, data: JSONObject) -> JSONObject:
    body = pick(data, "title", "body", "state", "state_reason", "labels", "assignees", "milestone")
    return await RestClient(ctx, GITHUB).json_object("PATCH", _issue(data), body=body)


async def create_issue_comment(ctx: ActionContext, data: JSONObject) -> JSONObject:
    path = f"{_issue(data)}/comments"
    return await RestClient(ctx, GITHUB).json_object("POST", path, body={"body": data["body"]})


async def list_repos(ctx: ActionContext, data: JSONObject) -> JSONObject:
    params = {**pick(data, "visibility", "sort", "direction"), **_paging(data)}
    if "affiliation" in data:
        params["affiliation"] = ",".join(data["affiliation"])
    return await _list(ctx, "/user/repos", params, "repositories")


async def create_pull_request(ctx: ActionContext, data: JSONObject) -> JSONObject:
    body = pick(data, "title", "head", "base", "body", "draft", "maintainer_can_modify")
    return await RestClient(ctx, GITHUB).json_object("POST", f"{_repo(data)}/pulls", body=body)


_REPOSITORY = choice(
    "Repository as owner/name, such as acme/backend.",
    action="list_repos",
    items="repositories",
    value="full_name",
    label="full_name",
    maxLength=140,
    # `.` and `..` would be path segments, not repository names.
    pattern="^[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?!\\.\\.?$)[A-Za-z0-9._-]{1,100}$",
)
_NUMBER = {
    "type": "integer",
    "minimum": 1,
    "description": "The issue (or pull request) number, as in /issues/89.",
}
_TITLE = {"type": "string", "minLength": 1, "maxLength": 256, "description": "Title."}
_BODY = {
    "type": "string",
    "maxLength": 65536,
    "description": "Body text in GitHub-flavoured Markdown.",
}
_LOGINS = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,39}$"},
    "maxItems": 10,
    "uniqueItems": True,
}
_LABELS = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 50},
    "maxItems": 100,
    "uniqueItems": True,
}
_DIRECTION = {"enum": ["asc", "desc"], "description": "Sort direction."}
_PAGING = {
    "per_page": {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 30,
        "description": "Results per page (at most 100).",
    },
    "page": {
        "type": "integer",
        "minimum": 1,
        "default": 1,
        "description": "Page to return; the output's `next_page` names the next one.",
    },
}

_CREATE_ISSUE = object_schema(
    {
        "repository": _REPOSITORY,
        "title": {**_TITLE, "description": "Issue title."},
        "body": {**_BODY, "description": "Issue description in GitHub-flavoured Markdown."},
        "labels": {**_LABELS, "description": "Label names to add; missing labels are created."},
        "assignees": {**_LOGINS, "description": "Logins of users to assign."},
        "milestone": {"type": "integer", "minimum": 1, "description": "Milestone number."},
    },
    ["repository", "title"],
)
_GET_ISSUE = object_schema(
    {"repository": _REPOSITORY, "issue_number": _NUMBER}, ["repository", "issue_number"]
)
_LIST_ISSUES = object_schema(
    {
        "repository": _REPOSITORY,
        "state": {
            "enum": ["open", "closed", "all"],
            "default": "open",
            "description": "Which issues to list by state.",
        },
        "labels": {**_LABELS, "description": "Only issues carrying all of these labels."},
        "assignee": {
            "type": "string",
            "pattern": "^([A-Za-z0-9-]{1,39}|\\*|none)$",
            "description": "Only issues assigned to this login; `none` or `*` for any.",
        },
        "creator": {
            "type": "string",
            "pattern": "^[A-Za-z0-9-]{1,39}$",
            "description": "Only issues opened by this login.",
        },
        "since": {
            "type": "string",
            "format": "date-time",
            "description": "Only issues updated at or after this ISO 8601 time.",
        },
        "sort": {"enum": ["created", "updated", "comments"], "description": "Sort key."},
        "direction": _DIRECTION,
        **_PAGING,
    },
    ["repository"],
)
_UPDATE_ISSUE = {
    **object_schema(
        {
            "repository": _REPOSITORY,
            "issue_number": _NUMBER,
            "title": {**_TITLE, "description": "New title."},
            "body": {**_BODY, "description": "New description; replaces the old one."},
            "state": {"enum": ["open", "closed"], "description": "Close or reopen."},
            "state_reason": {
                "enum": ["completed", "not_planned", "reopened"],
                "description": "Why the state changed.",
            },
            "labels": {**_LABELS, "description": "The complete new set of labels."},
            "assignees": {**_LOGINS, "description": "The complete new set of assignees."},
            "milestone": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "Milestone number, or null to remove the milestone.",
            },
        },
        ["repository", "issue_number"],
    ),
    # Something to change besides the two fields naming the issue.
    "minProperties": 3,
}
_COMMENT = object_schema(
    {
        "repository": _REPOSITORY,
        "issue_number": _NUMBER,
        "body": {**_BODY, "minLength": 1, "description": "Comment text in Markdown."},
    },
    ["repository", "issue_number", "body"],
)
_LIST_REPOS = object_schema(
    {
        "visibility": {
            "enum": ["all", "public", "private"],
            "default": "all",
            "description": "Which repositories by visibility.",
        },
        "affiliation": {
            "type": "array",
            "items": {"enum": ["owner", "collaborator", "organization_member"]},
            "minItems": 1,
            "uniqueItems": True,
            "description": "How the user is related to the repository (default: all three).",
        },
        "sort": {
            "enum": ["created", "updated", "pushed", "full_name"],
            "default": "full_name",
            "description": "Sort key.",
        },
        "direction": _DIRECTION,
        **_PAGING,
    }
)
_BRANCH = {"type": "string", "minLength": 1, "maxLength": 255}
_CREATE_PR = object_schema(
    {
        "repository": _REPOSITORY,
        "title": {**_TITLE, "description": "Pull request title."},
        "head": {
            **_BRANCH,
            "description": ("Branch with the changes; `owner:branch` for a branch in a fork."),
        },
        "base": {**_BRANCH, "description": "Branch to merge into, such as main."},
        "body": {**_BODY, "description": "Pull request description in Markdown."},
        "draft": {"type": "boolean", "description": "Open as a draft pull request."},
        "maintainer_can_modify": {
            "type": "boolean",
            "description": "Let maintainers push to the head branch of a fork.",
        },
    },
    ["repository", "title", "head", "base"],
)

integration = Integration(
    name="github",
    display_name="GitHub",
    description=(
        "Create, read, list and update GitHub issues, comment on them, open pull requests, "
        "and list the repositories the token can reach."
    ),
    auth_kind=AuthKind.BEARER,
    settings_schema=SETTINGS_SCHEMA,
    actions=(
        Action(
            name="create_issue",
            display_name="Create issue",
            description=(
                "Open an issue in a repository. Returns GitHub's issue: `id`, `number`, "
                "`html_url`, `title`, `state`, ..."
            ),
            input_schema=_CREATE_ISSUE,
            run=create_issue,
            annotations=CREATE,
        ),
        Action(
            name="get_issue",
            display_name="Get issue",
            description="Read one issue (or pull request) by number.",
            input_schema=_GET_ISSUE,
            run=get_issue,
            annotations=READ,
        ),
        Action(
            name="list_issues",
            display_name="List issues",
            description=(
                "List a repository's issues, newest first unless sorted otherwise: `issues` "
                "and `next_page` (null on the last page). Pull requests are issues to GitHub "
                "and appear too, marked by a `pull_request` field."
            ),
            input_schema=_LIST_ISSUES,
            run=list_issues,
            annotations=READ,
        ),
        Action(
            name="update_issue",
            display_name="Update issue",
            description=(
                "Change an issue's title, body, state, labels, assignees or milestone; "
                "labels and assignees given replace the existing ones."
            ),
            input_schema=_UPDATE_ISSUE,
            run=update_issue,
            annotations=UPDATE,
        ),
        Action(
            name="create_issue_comment",
            display_name="Comment on issue",
            description="Add a comment to an issue or pull request. Returns the comment.",
            input_schema=_COMMENT,
            run=create_issue_comment,
            annotations=CREATE,
        ),
        Action(
            name="list_repos",
            display_name="List repositories",
            description=(
                "List repositories the token's user can access: `repositories` (each with "
                "`full_name`, to use as `repository` elsewhere) and `next_page`."
            ),
            input_schema=_LIST_REPOS,
            run=list_repos,
            annotations=READ,
        ),
        Action(
            name="create_pull_request",
            display_name="Create pull request",
            description=(
                "Open a pull request from `head` into `base`. Returns the pull request: "
                "`id`, `number`, `html_url`, `state`, ..."
            ),
            input_schema=_CREATE_PR,
            run=create_pull_request,
            annotations=CREATE,
        ),
    ),
)
