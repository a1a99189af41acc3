"""GitHub REST API emulator: issues, issue comments, pull requests and /user/repos.

As GitHub does: a missing token is 401 "Requires authentication", a wrong one 401 "Bad
credentials"; unparseable JSON is 400 "Problems parsing JSON"; a body that breaks the rules is
422 "Validation Failed" with `errors`; unknown repositories and issues are 404 "Not Found";
lists page with `per_page`/`page` and a `Link` header.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulators.faults import Recorder

DOCS = "https://docs.github.com/rest"
LOGIN = "octocat"
NOW = "2025-02-01T12:00:00Z"


def _error(status: int, message: str, **extra: Any) -> Response:
    return JSONResponse(
        {"message": message, **extra, "documentation_url": DOCS, "status": str(status)},
        status_code=status,
    )


def _invalid(resource: str, field_name: str, code: str) -> Response:
    errors = [{"resource": resource, "field": field_name, "code": code}]
    return _error(422, "Validation Failed", errors=errors)


@dataclass
class Repository:
    full_name: str
    id: int
    private: bool = False
    branches: set[str] = field(default_factory=lambda: {"main"})
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, base: str) -> dict[str, Any]:
        owner, name = self.full_name.split("/")
        return {
            "id": self.id,
            "name": name,
            "full_name": self.full_name,
            "private": self.private,
            "owner": {"login": owner},
            "html_url": f"https://github.com/{self.full_name}",
            "url": f"{base}/repos/{self.full_name}",
            "default_branch": "main",
        }


@dataclass
class GitHubEmulator:
    token: str
    url: str = ""
    recorder: Recorder = field(default_factory=Recorder)
    repos: dict[str, Repository] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def __post_init__(self) -> None:
        for n, name in enumerate(("acme/backend", "acme/frontend", "acme/infra", "octocat/dots")):
            self.repos[name] = Repository(name, 100 + n, private=name == "acme/infra")
        self.repos["acme/backend"].branches.add("feature/login")

    def add_issue(self, full_name: str, title: str, **fields: Any) -> dict[str, Any]:
        repo = self.repos[full_name]
        number = len(repo.issues) + 1
        issue = {
            "id": next(self._ids),
            "node_id": f"I_{number}",
            "number": number,
            "title": title,
            "body": fields.get("body"),
            "state": fields.get("state", "open"),
            "state_reason": None,
            "labels": [{"name": name, "color": "ededed"} for name in fields.get("labels", [])],
            "assignees": [{"login": login} for login in fields.get("assignees", [])],
            "user": {"login": LOGIN},
            "comments": 0,
            "html_url": f"https://github.com/{full_name}/issues/{number}",
            "url": f"https://api.github.com/repos/{full_name}/issues/{number}",
            "created_at": NOW,
            "updated_at": NOW,
            "closed_at": None,
        }
        repo.issues[number] = issue
        return issue

    @cached_property
    def app(self) -> Starlette:
        route = self.recorder.route
        issue = "/repos/{owner}/{name}/issues/{number:int}"
        return Starlette(
            routes=[
                route("/repos/{owner}/{name}/issues", self._create_issue, ["POST"]),
                route("/repos/{owner}/{name}/issues", self._list_issues, ["GET"]),
                route(issue, self._get_issue, ["GET"]),
                route(issue, self._update_issue, ["PATCH"]),
                route(f"{issue}/comments", self._comment, ["POST"]),
                route("/repos/{owner}/{name}/pulls", self._create_pull, ["POST"]),
                route("/user/repos", self._list_repos, ["GET"]),
            ]
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token:
            return _error(401, "Requires authentication")
        if token != self.token:
            return _error(401, "Bad credentials")
        version = request.headers.get("x-github-api-version")
        if version is not None and version != "2022-11-28":
            return _error(400, f"API version {version} is not supported.")
        return None

    def _repo(self, request: Request) -> Repository | Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        found = self.repos.get(f"{request.path_params['owner']}/{request.path_params['name']}")
        return found if found is not None else _error(404, "Not Found")

    def _issue(self, request: Request) -> tuple[Repository, dict[str, Any]] | Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        issue = repo.issues.get(request.path_params["number"])
        return (repo, issue) if issue is not None else _error(404, "Not Found")

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "Problems parsing JSON")
        if not isinstance(body, dict):
            return _error(400, "Problems parsing JSON")
        return body

    def _paged(self, request: Request, items: list[dict[str, Any]]) -> Response:
        per_page = int(request.query_params.get("per_page", "30"))
        page = int(request.query_params.get("page", "1"))
        start = (page - 1) * per_page
        headers = {}
        last = max(1, -(-len(items) // per_page))
        if page < last:
            links = [(page + 1, "next"), (last, "last")]
            headers["link"] = ", ".join(
                f'<{request.url.include_query_params(page=n)}>; rel="{rel}"' for n, rel in links
            )
        return JSONResponse(items[start : start + per_page], headers=headers)

    # -- endpoints --------------------------------------------------------------------------

    async def _create_issue(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        title = body.get("title")
        if title is None:
            return _invalid("Issue", "title", "missing_field")
        if not isinstance(title, str) or not title:
            return _invalid("Issue", "title", "invalid")
        issue = self.add_issue(
            repo.full_name,
            title,
            body=body.get("body"),
            labels=body.get("labels", []),
            assignees=body.get("assignees", []),
        )
        return JSONResponse(issue, status_code=201)

    async def _get_issue(self, request: Request) -> Response:
        found = self._issue(request)
        return found if isinstance(found, Response) else JSONResponse(found[1])

    async def _list_issues(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        state = request.query_params.get("state", "open")
        labels = {n for n in request.query_params.get("labels", "").split(",") if n}
        found = [
            issue
            for issue in sorted(repo.issues.values(), key=lambda i: -i["number"])
            if state in ("all", issue["state"])
            and labels <= {label["name"] for label in issue["labels"]}
        ]
        return self._paged(request, found)

    async def _update_issue(self, request: Request) -> Response:
        found = self._issue(request)
        if isinstance(found, Response):
            return found
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        _repo, issue = found
        if "state" in body and body["state"] not in ("open", "closed"):
            return _invalid("Issue", "state", "invalid")
        for key in ("title", "body", "state", "state_reason"):
            if key in body:
                issue[key] = body[key]
        if "labels" in body:
            issue["labels"] = [{"name": n, "color": "ededed"} for n in body["labels"]]
        if "assignees" in body:
            issue["assignees"] = [{"login": login} for login in body["assignees"]]
        issue["closed_at"] = NOW if issue["state"] == "closed" else None
        return JSONResponse(issue)

    async def _comment(self, request: Request) -> Response:
        found = self._issue(request)
        if isinstance(found, Response):
            return found
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        repo, issue = found
        if not body.get("body"):
            return _invalid("IssueComment", "body", "missing_field")
        comment_id = next(self._ids)
        comment = {
            "id": comment_id,
            "body": body["body"],
            "user": {"login": LOGIN},
            "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
            "issue_url": issue["url"],
            "created_at": NOW,
            "updated_at": NOW,
        }
        repo.comments.append(comment)
        issue["comments"] += 1
        return JSONResponse(comment, status_code=201)

    async def _create_pull(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        for key in ("title", "head", "base"):
            if not body.get(key):
                return _invalid("PullRequest", key, "missing_field")
        if body["head"] not in repo.branches:
            return _invalid("PullRequest", "head", "invalid")
        if body["base"] not in repo.branches:
            return _invalid("PullRequest", "base", "invalid")
        if any(i.get("head", {}).get("ref") == body["head"] for i in repo.issues.values()):
            owner = repo.full_name.split("/")[0]
            return _error(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {owner}:{body['head']}.",
                    }
                ],
            )
        pull = self.add_issue(repo.full_name, body["title"], body=body.get("body"))
        number = pull["number"]
        pull.update(
            {
                "html_url": f"https://github.com/{repo.full_name}/pull/{number}",
                "head": {"ref": body["head"], "label": body["head"]},
                "base": {"ref": body["base"], "label": body["base"]},
                "draft": bool(body.get("draft", False)),
                "merged": False,
                "pull_request": {"html_url": f"https://github.com/{repo.full_name}/pull/{number}"},
            }
        )
        return JSONResponse(pull, status_code=201)

    async def _list_repos(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        visibility = request.query_params.get("visibility", "all")
        base = str(request.base_url).rstrip("/")
        found = [
            repo.summary(base)
            for _, repo in sorted(self.repos.items())
            if visibility == "all" or (visibility == "private") == repo.private
        ]
        return self._paged(request, found)
