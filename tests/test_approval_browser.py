"""A person approves in a real browser: headless Chromium on the hosted page of `treadle serve`.

Chromium and its driver come from Debian (`chromium`, `chromium-driver`); Selenium is pointed
at both explicitly, so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_harness import ServeProcess, free_port, subprocess_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE = (390, 844)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium: apt-get install chromium chromium-driver",
)


def start_serve(data_dir: Path) -> ServeProcess:
    """`treadle serve` on a free port, handing out links to itself (TREADLE_PUBLIC_URL)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**subprocess_env(data_dir), "TREADLE_PUBLIC_URL": base_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "treadle", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = ServeProcess(process, base_url)
    assert process.stderr is not None
    for line in process.stderr:  # pytest-timeout bounds a hang
        started.lines.append(line)
        if "Uvicorn running" in line:
            break
    else:
        raise RuntimeError("treadle serve exited:\n" + "".join(started.lines))
    threading.Thread(target=started._drain, daemon=True).start()
    return started


@dataclass
class Served:
    rest: httpx2.Client
    workspace_id: str
    base_url: str


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "treadle", "init"],
        env=subprocess_env(data_dir),
        check=True,
        capture_output=True,
    )
    api_key = (data_dir / "api-key").read_text().strip()
    serve = start_serve(data_dir)
    try:
        with httpx2.Client(
            base_url=f"{serve.base_url}/api/v1",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        ) as rest:
            workspaces = rest.get("/workspaces").json()["workspaces"]
            yield Served(rest, workspaces[0]["id"], serve.base_url)
    finally:
        serve.stop()


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager, should anything call it
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # A phone's viewport (a headless window is never narrower than 500 CSS pixels).
    metrics = {"width": PHONE[0], "height": PHONE[1], "pixelRatio": 2.0}
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()


def executions(served: Served) -> list[dict[str, Any]]:
    found = served.rest.get("/activity", params={"type": "action_execution"}).json()
    entries: list[dict[str, Any]] = found["activity"]
    return entries


def test_a_person_approves_in_the_browser_and_the_retry_runs_once(
    served: Served, chromium: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    rest = served.rest
    configured = rest.post(
        f"/workspaces/{served.workspace_id}/integrations",
        json={
            "integrationName": "testkit",
            "connectionStrategy": "fixed",
            "integrationAlias": "kit",
        },
    )
    assert configured.status_code == 201, configured.text
    policy = rest.post(
        "/approval-policies",
        json={
            "workspaceId": served.workspace_id,
            "name": "Echo needs a person",
            "decision": "require_approval",
            "actionNames": ["echo"],
        },
    )
    assert policy.status_code == 201, policy.text
    call = {
        "workspaceId": served.workspace_id,
        "integrationName": "testkit",
        "integrationAlias": "kit",
        "actionName": "echo",
        "input": {"text": "Refund order 123", "channel": "C0123", "password": "hunter2-x9"},
        "idempotencyKey": "browser-refund-123",
    }
    asked = rest.post("/actions/execute", json=call)
    assert asked.status_code == 202, asked.text
    link = asked.json()["approval"]["hostedApprovalUrl"]
    assert link.startswith(f"{served.base_url}/approve/apr_")

    chromium.get(link)
    assert chromium.execute_script("return window.innerWidth") == PHONE[0]
    assert chromium.title == "Approval request"
    page = chromium.find_element(By.TAG_NAME, "main").text
    for shown in ("testkit", "kit", "echo", "Refund order 123", "[redacted]"):
        assert shown in page
    assert "hunter2-x9" not in chromium.page_source
    # Readable on a phone: nothing wider than the screen, both buttons fully on it.
    overflow = chromium.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0
    for button in chromium.find_elements(By.TAG_NAME, "button"):
        assert button.is_displayed()
        assert button.size["height"] >= 40
        assert button.location["x"] + button.size["width"] <= PHONE[0]
    screenshot = tmp_path / "approval-page-phone.png"
    assert chromium.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 1000

    chromium.find_element(By.ID, "reason").send_keys("Checked with finance")
    chromium.find_element(By.CSS_SELECTOR, "button.approve").click()
    WebDriverWait(chromium, 10).until(expected_conditions.title_is("Decision recorded"))
    assert "Approved" in chromium.find_element(By.CLASS_NAME, "status").text

    approval_id = asked.json()["approval"]["id"]
    decided = rest.get(f"/approvals/{approval_id}").json()["approval"]
    assert (decided["status"], decided["decidedBy"], decided["reason"]) == (
        "approved",
        "hosted_link",
        "Checked with finance",
    )
    assert executions(served)[0]["status"] == "approval_pending"

    ran = rest.post("/actions/execute", json=call)
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"]["text"] == "Refund order 123"
    replay = rest.post("/actions/execute", json=call)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == ran.json()
    statuses = [entry["status"] for entry in executions(served)]
    assert statuses.count("succeeded") == 1

    # The link is spent: opening it again shows no form.
    chromium.get(link)
    assert chromium.find_elements(By.TAG_NAME, "form") == []


def test_a_person_approves_in_the_browser_while_an_mcp_call_waits(
    served: Served, chromium: Any
) -> None:
    """The handshake-era call stays open; the link it hands out is approved in Chromium and
    the same call then returns the action's result."""
    import anyio
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    rest = served.rest
    configured = rest.post(
        f"/workspaces/{served.workspace_id}/integrations",
        json={
            "integrationName": "testkit",
            "connectionStrategy": "fixed",
            "integrationAlias": "kit",
        },
    )
    assert configured.status_code == 201, configured.text
    policy = rest.post(
        "/approval-policies",
        json={
            "workspaceId": served.workspace_id,
            "name": "agents ask first",
            "decision": "require_approval",
            "sources": ["mcp_tools"],
            "actionNames": ["echo"],
        },
    )
    assert policy.status_code == 201, policy.text
    created = rest.post("/mcp/servers", json={"workspaceId": served.workspace_id, "name": "b"})
    assert created.status_code == 201, created.text
    endpoint = f"{served.base_url}/mcp/{created.json()['server']['id']}"
    token = created.json()["token"]
    opened: list[str] = []

    def approve_in_browser(link: str) -> None:
        chromium.get(link)
        chromium.find_element(By.CSS_SELECTOR, "button.approve").click()
        WebDriverWait(chromium, 10).until(expected_conditions.title_is("Decision recorded"))

    async def person(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        opened.append(params.url)
        await anyio.to_thread.run_sync(approve_in_browser, params.url)
        return ElicitResult(action="accept")

    async def call() -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(
                streamable_http_client(endpoint, http_client=http),
                mode="legacy",
                elicitation_callback=person,
            ) as client,
        ):
            with anyio.fail_after(60):
                return await client.call_tool("kit__echo", {"text": "ship it", "channel": "C7"})

    result = anyio.run(call)
    assert not result.is_error
    assert result.structured_content == {"text": "ship it", "channel": "C7", "count": None}
    assert len(opened) == 1
    assert opened[0].startswith(f"{served.base_url}/approve/apr_")
    statuses = [entry["status"] for entry in executions(served)]
    assert statuses.count("succeeded") == 1
