"""The GitHub integration end to end, over REST execute and MCP, against the GitHub emulator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from emulators.github import GitHubEmulator
from emulators.harness import FACES, Stage, Tools, assert_well_described, open_stage
from treadle.catalog.builtin.github import integration
from treadle.catalog.providers import retry

pytestmark = pytest.mark.anyio

TOKEN = "ghp_s3cr3tGitHubT0ken0123456789abcdef"
REPO = "acme/backend"


@pytest.fixture(scope="module")
async def stage(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stage[GitHubEmulator]]:
    data_dir = tmp_path_factory.mktemp("github")
    async with open_stage(data_dir, "github", TOKEN, lambda: GitHubEmulator(TOKEN)) as opened:
        yield opened


@pytest.fixture
def github(stage: Stage[GitHubEmulator]) -> GitHubEmulator:
    return stage.fresh()


@pytest.fixture(params=FACES)
async def tools(
    request: pytest.FixtureRequest, stage: Stage[GitHubEmulator], github: GitHubEmulator
) -> AsyncIterator[Tools]:
    async with stage.tools(request.param) as opened:
        yield opened


async def test_create_issue_sends_githubs_headers_and_returns_the_issue(
    tools: Tools, github: GitHubEmulator
) -> None:
    answer = await tools.call(
        "create_issue",
        {
            "repository": REPO,
            "title": "Login page 500 error on mobile",
            "body": "Users on iOS Safari see a 500.",
            "labels": ["bug", "priority-high"],
        },
    )

    output = answer.output()
    assert output["number"] == 1
    assert output["html_url"] == "https://github.com/acme/backend/issues/1"
    assert (output["title"], output["state"]) == ("Login page 500 error on mobile", "open")
    assert isinstance(output["id"], int)
    [seen] = github.recorder.calls("/repos/acme/backend/issues", "POST")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["accept"] == "application/vnd.github+json"
    assert seen.headers["x-github-api-version"] == "2022-11-28"
    assert seen.json() == {
        "title": "Login page 500 error on mobile",
        "body": "Users on iOS Safari see a 500.",
        "labels": ["bug", "priority-high"],
    }


async def test_get_issue_reads_one_issue(tools: Tools, github: GitHubEmulator) -> None:
    created = github.add_issue(REPO, "Flaky test")

    output = (await tools.call("get_issue", {"repository": REPO, "issue_number": 1})).output()

    assert (output["id"], output["title"]) == (created["id"], "Flaky test")


async def test_a_missing_issue_is_an_upstream_not_found(tools: Tools) -> None:
    answer = await tools.call("get_issue", {"repository": REPO, "issue_number": 404})

    assert (answer.kind, answer.error) == ("upstream", "not_found")
    assert answer.body["detail"]["httpStatus"] == 404
    assert answer.body["detail"]["message"] == "Not Found"


async def test_list_issues_pages_with_the_link_header(tools: Tools, github: GitHubEmulator) -> None:
    for title in ("one", "two", "three"):
        github.add_issue(REPO, title, labels=["bug"])
    github.add_issue(REPO, "closed", state="closed", labels=["bug"])

    first = (
        await tools.call("list_issues", {"repository": REPO, "labels": ["bug"], "per_page": 2})
    ).output()
    second = (
        await tools.call(
            "list_issues",
            {"repository": REPO, "labels": ["bug"], "per_page": 2, "page": first["next_page"]},
        )
    ).output()

    assert [i["title"] for i in first["issues"]] == ["three", "two"]
    assert first["next_page"] == 2
    assert [i["title"] for i in second["issues"]] == ["one"]
    assert second["next_page"] is None
    assert github.recorder.calls("/issues", "GET")[0].param("labels") == "bug"


async def test_update_issue_closes_it(tools: Tools, github: GitHubEmulator) -> None:
    github.add_issue(REPO, "Done already")

    answer = await tools.call(
        "update_issue",
        {"repository": REPO, "issue_number": 1, "state": "closed", "state_reason": "completed"},
    )

    output = answer.output()
    assert (output["state"], output["state_reason"]) == ("closed", "completed")
    assert github.repos[REPO].issues[1]["closed_at"] is not None


async def test_update_issue_needs_something_to_change(tools: Tools) -> None:
    answer = await tools.call("update_issue", {"repository": REPO, "issue_number": 1})

    assert (answer.kind, answer.error) == ("refused", "VALIDATION_ERROR")


async def test_create_issue_comment_comments(tools: Tools, github: GitHubEmulator) -> None:
    github.add_issue(REPO, "Question")

    answer = await tools.call(
        "create_issue_comment", {"repository": REPO, "issue_number": 1, "body": "Looking into it"}
    )

    output = answer.output()
    assert output["body"] == "Looking into it"
    assert output["html_url"].startswith("https://github.com/acme/backend/issues/1#")
    assert github.repos[REPO].issues[1]["comments"] == 1


async def test_list_repos_lists_full_names_and_pages(tools: Tools) -> None:
    first = (await tools.call("list_repos", {"per_page": 3})).output()
    private = (await tools.call("list_repos", {"visibility": "private"})).output()

    assert [r["full_name"] for r in first["repositories"]] == [
        "acme/backend",
        "acme/frontend",
        "acme/infra",
    ]
    assert first["next_page"] == 2
    assert [r["full_name"] for r in private["repositories"]] == ["acme/infra"]


async def test_create_pull_request_opens_one_and_a_second_is_refused_upstream(
    tools: Tools,
) -> None:
    pull = {"repository": REPO, "title": "Login fix", "head": "feature/login", "base": "main"}

    first = await tools.call("create_pull_request", {**pull, "draft": True})
    again = await tools.call("create_pull_request", pull)

    output = first.output()
    assert output["html_url"] == f"https://github.com/{REPO}/pull/{output['number']}"
    assert (output["state"], output["draft"]) == ("open", True)
    assert (again.kind, again.error) == ("upstream", "validation_failed")
    assert again.body["detail"]["httpStatus"] == 422


async def test_a_validation_failure_carries_githubs_errors(tools: Tools) -> None:
    answer = await tools.call(
        "create_pull_request",
        {"repository": REPO, "title": "x", "head": "no-such-branch", "base": "main"},
    )

    assert (answer.kind, answer.error) == ("upstream", "validation_failed")
    assert answer.body["detail"]["errors"] == [
        {"resource": "PullRequest", "field": "head", "code": "invalid"}
    ]


async def test_a_repository_must_be_owner_slash_name(tools: Tools) -> None:
    answer = await tools.call("get_issue", {"repository": "acme/..", "issue_number": 1})

    assert (answer.kind, answer.error) == ("refused", "VALIDATION_ERROR")
    assert answer.body["field"] == "repository"


async def test_bad_credentials_ask_to_reauthenticate(tools: Tools, github: GitHubEmulator) -> None:
    github.token = "ghp_rotated"

    answer = await tools.call("list_repos", {})

    assert (answer.kind, answer.error) == ("refused", "CONNECTION_ERROR")
    if answer.status is not None:
        assert answer.status == 400


async def test_a_rate_limited_call_is_retried_after_retry_after(
    tools: Tools, github: GitHubEmulator
) -> None:
    github.recorder.fail(
        "/issues",
        429,
        {"message": "API rate limit exceeded"},
        headers={"Retry-After": "0"},
        method="POST",
        times=2,
    )

    answer = await tools.call("create_issue", {"repository": REPO, "title": "Once"})

    assert answer.output()["number"] == 1
    assert len(github.recorder.calls("/issues", "POST")) == 3
    assert len(github.repos[REPO].issues) == 1


async def test_a_secondary_rate_limit_that_persists_is_reported(
    tools: Tools, github: GitHubEmulator
) -> None:
    github.recorder.fail(
        "/user/repos",
        403,
        {"message": "You have exceeded a secondary rate limit."},
        headers={"Retry-After": "0"},
        times=10,
    )

    answer = await tools.call("list_repos", {})

    assert (answer.kind, answer.error) == ("upstream", "rate_limited")
    assert len(github.recorder.calls("/user/repos")) == 1 + retry.RETRY_BUDGET.max_retries


async def test_an_exhausted_primary_rate_limit_reports_when_it_resets(
    tools: Tools, github: GitHubEmulator
) -> None:
    reset = int(time.time()) + 600
    github.recorder.fail(
        "/user/repos",
        403,
        {"message": "API rate limit exceeded for user."},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )

    answer = await tools.call("list_repos", {})

    assert (answer.kind, answer.error) == ("upstream", "rate_limited")
    assert 590 <= answer.body["detail"]["retryAfter"] <= 601
    assert len(github.recorder.calls("/user/repos")) == 1


async def test_a_forbidden_answer_is_not_mistaken_for_a_rate_limit(
    tools: Tools, github: GitHubEmulator
) -> None:
    github.recorder.fail(
        "/issues", 403, {"message": "Resource not accessible by integration"}, method="POST"
    )

    answer = await tools.call("create_issue", {"repository": REPO, "title": "x"})

    assert (answer.kind, answer.error) == ("upstream", "forbidden")
    assert len(github.recorder.calls("/issues", "POST")) == 1


async def test_a_server_error_is_an_upstream_error(tools: Tools, github: GitHubEmulator) -> None:
    github.recorder.fail("/issues/1", 502, "<html>Unicorn!</html>")
    github.add_issue(REPO, "x")

    answer = await tools.call("get_issue", {"repository": REPO, "issue_number": 1})

    assert (answer.kind, answer.error) == ("upstream", "server_error")
    assert answer.body["detail"]["httpStatus"] == 502


def test_every_action_is_closed_described_and_honestly_annotated() -> None:
    assert_well_described(
        integration,
        read_only={"get_issue", "list_issues", "list_repos"},
        destructive={"update_issue"},
    )
    create = integration.action("create_issue")
    assert create is not None
    assert create.input_schema["properties"]["repository"]["x-treadle-options"] == {
        "action": "list_repos",
        "itemsField": "repositories",
        "valueField": "full_name",
        "labelField": "full_name",
    }
