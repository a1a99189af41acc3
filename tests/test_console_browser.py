"""A person uses the web console in a real browser: headless Chromium on `treadle serve`.

Sign in with the key `treadle init` printed, add the kv-store integration under an alias,
approve a gated call in the inbox and see the call complete, revoke a key and see it refused.
Chromium and its driver come from Debian, as in tests/test_approval_browser.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from test_approval_browser import (  # noqa: F401
    CHROMEDRIVER,
    CHROMIUM,
    PHONE,
    Served,
    chromium,
    served,
)

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium: apt-get install chromium chromium-driver",
    ),
    # A real browser through several pages: minutes on a busy CI machine, not seconds.
    pytest.mark.timeout(300),
]


def titled(driver: Any, prefix: str) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.title.startswith(prefix))


_FLASH_TEXT = (
    "const found = document.querySelector('.flash'); return found ? found.textContent : ''"
)


def flash(driver: Any, text: str) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    # One script finds the message and reads it: a click's navigation may replace the page
    # between two WebDriver commands (the element found, then "does not belong to the
    # document"). A script that met the page mid-navigation is asked again until the deadline.
    WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: text in (d.execute_script(_FLASH_TEXT) or "")
    )


def sign_in(driver: Any, served: Served) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    # Elements of the next page are waited for (a click does not wait for its navigation).
    driver.implicitly_wait(10)
    driver.get(f"{served.base_url}/console")
    assert driver.title.startswith("Sign in")
    key = served.rest.headers["Authorization"].split(" ", 1)[1]
    field = driver.find_element(By.ID, "api_key")
    assert driver.switch_to.active_element == field  # focus starts where the typing is
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()
    titled(driver, "Approvals")
    # The vendored htmx loaded under the console's Content-Security-Policy.
    assert driver.execute_script("return typeof window.htmx") == "object"


def no_overflow(driver: Any) -> None:
    width = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert width <= 0


def test_a_person_adds_an_integration_and_approves_a_call_in_the_inbox(
    served: Served,  # noqa: F811
    chromium: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(chromium, served)
    assert chromium.execute_script("return window.innerWidth") == PHONE[0]
    assert chromium.find_element(By.ID, "pending-count").text == "0"

    chromium.find_element(By.LINK_TEXT, "Workspaces").click()
    titled(chromium, "Workspaces")
    chromium.find_element(By.CSS_SELECTOR, "main ul.list a").click()
    chromium.find_element(By.ID, "q").send_keys("key-value")
    chromium.find_element(By.CSS_SELECTOR, "main form button").click()
    chromium.find_element(By.CSS_SELECTOR, "input#q[value=key-value]")
    chromium.find_element(By.PARTIAL_LINK_TEXT, "Key-Value Store").click()
    chromium.find_element(By.ID, "integrationAlias").send_keys("notes")
    for action in ("get", "put"):
        chromium.find_element(By.ID, f"action-{action}").click()
    no_overflow(chromium)
    assert chromium.save_screenshot(str(tmp_path / "console-add-integration-phone.png"))
    chromium.find_element(
        By.CSS_SELECTOR, "main form[action$='/integrations'] button[type=submit]"
    ).click()
    flash(chromium, "Added notes.")
    installed = served.rest.get(f"/workspaces/{served.workspace_id}/integrations").json()
    (only,) = installed["integrations"]
    assert (only["integrationAlias"], sorted(only["allowedActions"])) == ("notes", ["get", "put"])

    # The same alias again: the documented error (409 DUPLICATE) beside its field.
    chromium.find_element(By.PARTIAL_LINK_TEXT, "Key-Value Store").click()
    chromium.find_element(By.ID, "integrationAlias").send_keys("notes")
    chromium.find_element(
        By.CSS_SELECTOR, "main form[action$='/integrations'] button[type=submit]"
    ).click()
    assert "DUPLICATE" in chromium.find_element(By.ID, "integrationAlias-error").text
    assert chromium.find_element(By.ID, "integrationAlias").get_attribute("aria-invalid") == "true"

    policy = served.rest.post(
        "/approval-policies",
        json={
            "workspaceId": served.workspace_id,
            "name": "puts need a person",
            "decision": "require_approval",
            "actionNames": ["put"],
        },
    )
    assert policy.status_code == 201, policy.text
    agent = served.rest.post("/api-keys", json={"name": "agent"}).json()
    call = {
        "workspaceId": served.workspace_id,
        "integrationName": "kv-store",
        "integrationAlias": "notes",
        "actionName": "put",
        "endUserId": "alice",
        "input": {"key": "greeting", "value": "hello from the console test"},
        "idempotencyKey": "console-browser-1",
    }
    with httpx2.Client(
        base_url=f"{served.base_url}/api/v1",
        headers={"Authorization": f"Bearer {agent['token']}"},
        timeout=30,
    ) as as_agent:
        asked = as_agent.post("/actions/execute", json=call)
        assert asked.status_code == 202, asked.text

        chromium.find_element(By.PARTIAL_LINK_TEXT, "Approvals").click()
        titled(chromium, "Approvals")
        assert chromium.find_element(By.ID, "pending-count").text == "1"
        card = chromium.find_element(By.CSS_SELECTOR, "section.card")
        assert "hello from the console test" in card.text
        assert "notes · put" in card.text
        no_overflow(chromium)
        assert chromium.save_screenshot(str(tmp_path / "console-inbox-phone.png"))
        card.find_element(By.TAG_NAME, "textarea").send_keys("fine by me")
        card.find_element(By.CSS_SELECTOR, "button.approve").click()
        flash(chromium, "Approved")
        assert chromium.find_element(By.ID, "pending-count").text == "0"

        ran = as_agent.post("/actions/execute", json=call)
        assert ran.status_code == 200, ran.text
        assert ran.json()["success"] is True
    got = served.rest.post(
        "/actions/execute",
        json={**call, "actionName": "get", "input": {"key": "greeting"}, "idempotencyKey": None},
    )
    assert got.status_code == 200, got.text
    assert "hello from the console test" in got.text


def test_a_person_revokes_a_key_and_it_is_refused(
    served: Served,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(chromium, served)
    chromium.find_element(By.LINK_TEXT, "API keys").click()
    titled(chromium, "API keys")
    chromium.find_element(By.ID, "name").send_keys("ci pipeline")
    chromium.find_element(By.CSS_SELECTOR, "main form[action='/console/keys'] button").click()
    token = chromium.find_element(By.ID, "new-token").get_attribute("value")
    assert token
    with httpx2.Client(
        base_url=f"{served.base_url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as as_ci:
        assert as_ci.get("/workspaces").status_code == 200
        chromium.find_element(By.CSS_SELECTOR, "button[aria-label='Revoke ci pipeline']").click()
        flash(chromium, "Revoked ci pipeline.")
        refused = as_ci.get("/workspaces")
        assert refused.status_code == 401
        assert refused.json()["error"] == "UNAUTHORIZED"
    # Reading again never shows the secret.
    assert token not in chromium.page_source
    chromium.find_element(By.CSS_SELECTOR, "header form button").click()
    titled(chromium, "Sign in")
    chromium.get(f"{served.base_url}/console/keys")
    assert chromium.title.startswith("Sign in")


# Accessibility and screenshots -----------------------------------------------------------------

# axe-core from the npm registry (`.ci/run` installs it into .tools/), injected from disk.
AXE = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
DESKTOP = (1280, 800)


def accessible(driver: Any) -> None:
    """axe-core finds no violation of serious or critical impact on the page shown."""
    if not AXE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AXE} is missing: .ci/run installs axe-core")
        pytest.skip("axe-core is not installed (npm install axe-core in .tools)")
    driver.execute_script(AXE.read_text())
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', nodes: [String(e)]}]));"
    )
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, (driver.current_url, bad)


@pytest.fixture
def desktop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Chromium as the phone fixture starts it, but in a 1280-pixel-wide window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
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
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        f"--user-data-dir={tmp_path / 'chromium-desktop-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def populate(served: Served) -> dict[str, str]:  # noqa: F811
    """Something on every page: an integration, a gated call, a server, a connection, an end
    user and activity."""
    rest, ws = served.rest, served.workspace_id
    added = rest.post(
        f"/workspaces/{ws}/integrations",
        json={
            "integrationName": "kv-store",
            "integrationAlias": "notes",
            "connectionStrategy": "fixed",
        },
    )
    assert added.status_code == 201, added.text
    for index in range(3):
        ran = rest.post(
            "/actions/execute",
            json={
                "workspaceId": ws,
                "integrationName": "kv-store",
                "integrationAlias": "notes",
                "actionName": "put",
                "endUserId": "alice",
                "input": {"key": f"k{index}", "value": index},
            },
        )
        assert ran.status_code == 200, ran.text
    refused = rest.post(
        "/actions/execute",
        json={
            "workspaceId": ws,
            "integrationName": "kv-store",
            "integrationAlias": "notes",
            "actionName": "put",
            "endUserId": "alice",
            "input": {},
        },
    )
    assert refused.status_code == 400
    policy = rest.post(
        "/approval-policies",
        json={
            "workspaceId": ws,
            "name": "deletes need a person",
            "decision": "require_approval",
            "actionNames": ["delete"],
        },
    )
    assert policy.status_code == 201, policy.text
    asked = rest.post(
        "/actions/execute",
        json={
            "workspaceId": ws,
            "integrationName": "kv-store",
            "integrationAlias": "notes",
            "actionName": "delete",
            "endUserId": "alice",
            "input": {"key": "k0"},
            "idempotencyKey": "console-screens-1",
        },
    )
    assert asked.status_code == 202, asked.text
    server = rest.post("/mcp/servers", json={"workspaceId": ws, "name": "Support bot"})
    assert server.status_code == 201, server.text
    user = rest.post("/end-users", json={"workspaceId": ws, "externalId": "alice"})
    assert user.status_code == 201, user.text
    connection = rest.post(
        "/connections",
        json={
            "integrationName": "github",
            "type": "bearer",
            "displayName": "Team GitHub",
            "externalId": "gh_team",
            "workspaceId": ws,
            "values": {"token": "ghp_never_on_a_page"},
        },
    )
    assert connection.status_code == 201, connection.text
    entries = rest.get("/activity", params={"type": "action_execution"}).json()["activity"]
    return {"server": server.json()["server"]["id"], "entry": entries[0]["id"]}


@pytest.mark.parametrize("label", ["phone", "desktop"])
def test_every_console_page_is_accessible_at_phone_and_desktop_width(
    served: Served,  # noqa: F811
    request: pytest.FixtureRequest,
    label: str,
) -> None:
    driver = request.getfixturevalue("chromium" if label == "phone" else "desktop")
    size = PHONE if label == "phone" else DESKTOP
    ids = populate(served)
    base = served.base_url
    pages = {
        "approvals": "/console/approvals",
        "workspaces": "/console/workspaces",
        "workspace": f"/console/workspaces/{served.workspace_id}",
        "connections": "/console/connections",
        "activity": "/console/activity?range=24h",
        "activity-record": f"/console/activity/{ids['entry']}",
        "servers": "/console/servers",
        "server": f"/console/servers/{ids['server']}",
        "keys": "/console/keys",
    }
    driver.get(f"{base}/console/signin")
    accessible(driver)
    sign_in(driver, served)
    assert driver.execute_script("return window.innerWidth") == size[0]
    for name, path in pages.items():
        driver.get(f"{base}{path}")
        assert "ghp_never_on_a_page" not in driver.page_source
        accessible(driver)
        no_overflow(driver)
        if name in ("approvals", "connections", "activity", "server"):
            shot(driver, f"console-{name}-{label}")


# What a person does, per area -------------------------------------------------------------


def mcp_status(served: Served, server_id: str, token: str) -> int:  # noqa: F811
    """The status an MCP client gets for `initialize` with this bearer token."""
    with httpx2.Client(timeout=30) as client:
        answer = client.post(
            f"{served.base_url}/mcp/{server_id}",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            },
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "console-test", "version": "1"},
                },
            },
        )
    return answer.status_code


def clipboard(driver: Any, served: Served) -> str:  # noqa: F811
    text: str = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, e => done('ERROR ' + e));"
    )
    return text


def test_a_person_creates_an_mcp_server_copies_its_entry_and_rotates_its_token(
    served: Served,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(chromium, served)
    chromium.execute_cdp_cmd(
        "Browser.grantPermissions",
        {
            "origin": served.base_url,
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        },
    )
    chromium.find_element(By.LINK_TEXT, "MCP servers").click()
    titled(chromium, "MCP servers")
    chromium.find_element(By.ID, "server-name").send_keys("Support bot")
    chromium.find_element(By.CSS_SELECTOR, "main form[action='/console/servers'] button").click()
    titled(chromium, "Support bot")
    token = chromium.find_element(By.ID, "new-server-token").get_attribute("value")
    (server,) = served.rest.get("/mcp/servers").json()["servers"]
    assert mcp_status(served, server["id"], token) == 200

    # The copy button puts exactly the shown entry on the clipboard.
    chromium.find_element(By.XPATH, "//button[text()='Copy Claude Desktop entry']").click()
    chromium.find_element(By.XPATH, "//button[text()='Copied']")
    entry = json.loads(clipboard(chromium, served))
    shown = chromium.find_element(By.ID, "config-claude-desktop").get_attribute("value")
    assert json.loads(shown) == entry
    assert entry["mcpServers"]["treadle-Support-bot"]["args"][:3] == [
        "stdio",
        "--server",
        server["id"],
    ]
    cursor = json.loads(chromium.find_element(By.ID, "config-cursor").get_attribute("value"))
    assert cursor["mcpServers"]["treadle-Support-bot"]["headers"] == {
        "Authorization": f"Bearer {token}"
    }
    no_overflow(chromium)
    accessible(chromium)

    chromium.find_element(By.XPATH, "//button[text()='Rotate token']").click()
    flash(chromium, "New token made")
    rotated = chromium.find_element(By.ID, "new-server-token").get_attribute("value")
    assert rotated != token
    assert mcp_status(served, server["id"], token) == 401
    assert mcp_status(served, server["id"], rotated) == 200
    chromium.get(f"{served.base_url}/console/servers/{server['id']}")
    assert rotated not in chromium.page_source


def test_a_person_adds_a_connection_and_sees_it_listed_without_its_secret(
    served: Served,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    secret = "ghp_typed_in_the_console"
    sign_in(chromium, served)
    chromium.find_element(By.LINK_TEXT, "Connections").click()
    titled(chromium, "Connections")
    Select(chromium.find_element(By.ID, "integrationName")).select_by_visible_text("github")
    Select(chromium.find_element(By.ID, "type")).select_by_visible_text("bearer")
    chromium.find_element(By.ID, "displayName").send_keys("Team GitHub")
    chromium.find_element(By.ID, "externalId").send_keys("gh_team")
    Select(chromium.find_element(By.ID, "workspaceId")).select_by_value(served.workspace_id)
    chromium.find_element(By.ID, "secret").send_keys(secret)
    chromium.find_element(By.CSS_SELECTOR, "form[action='/console/connections'] button").click()
    flash(chromium, "Connected Team GitHub.")
    row = chromium.find_element(By.CSS_SELECTOR, "#connections tbody tr")
    assert "gh_team" in row.text
    assert "healthy" in row.text
    assert secret not in chromium.page_source
    (listed,) = served.rest.get("/connections").json()["connections"]
    assert listed["externalId"] == "gh_team"
    assert secret not in json.dumps(listed)
    no_overflow(chromium)
    accessible(chromium)

    # The same external ID again: the documented error beside its field, the secret not kept.
    chromium.find_element(By.ID, "displayName").send_keys("Again")
    chromium.find_element(By.ID, "externalId").send_keys("gh_team")
    Select(chromium.find_element(By.ID, "workspaceId")).select_by_value(served.workspace_id)
    chromium.find_element(By.ID, "secret").send_keys(secret)
    chromium.find_element(By.CSS_SELECTOR, "form[action='/console/connections'] button").click()
    assert "DUPLICATE" in chromium.find_element(By.ID, "externalId-error").text
    assert chromium.find_element(By.ID, "secret").get_attribute("value") == ""
    assert secret not in chromium.page_source

    chromium.find_element(
        By.CSS_SELECTOR, "button[aria-label='Delete connection Team GitHub']"
    ).click()
    flash(chromium, "Deleted Team GitHub.")
    assert served.rest.get("/connections").json()["connections"] == []


def test_a_person_filters_the_activity_and_opens_a_record(
    served: Served,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    populate(served)
    sign_in(chromium, served)
    chromium.find_element(By.LINK_TEXT, "Activity").click()
    titled(chromium, "Activity")
    chromium.find_element(By.ID, "f-action").send_keys("put")
    Select(chromium.find_element(By.ID, "f-status")).select_by_visible_text("refused")
    Select(chromium.find_element(By.ID, "f-range")).select_by_value("24h")
    chromium.find_element(By.CSS_SELECTOR, "form.filters button").click()
    chromium.find_element(By.CSS_SELECTOR, "input#f-action[value=put]")
    rows = chromium.find_elements(By.CSS_SELECTOR, "#activity-log tbody tr")
    assert len(rows) == 1
    assert "refused" in rows[0].text
    # The chart's numbers, for everyone: its description and its table.
    desc = chromium.find_element(By.ID, "chart-desc").get_attribute("textContent")
    assert "1 calls, 1 of them failed or refused" in desc
    chromium.find_element(By.CSS_SELECTOR, "details summary").click()
    assert "1" in chromium.find_element(By.CSS_SELECTOR, "#chart-table tbody td").text
    accessible(chromium)
    rows[0].find_element(By.TAG_NAME, "a").click()
    titled(chromium, "Activity record")
    details = chromium.find_element(By.TAG_NAME, "dl").text
    assert "refused" in details
    assert "notes (kv-store)" in details
    no_overflow(chromium)


def test_a_person_signs_in_with_the_orgs_identity_provider(
    served: Served,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    from oidc_provider import oidc_provider

    with oidc_provider() as provider:
        idp = served.rest.post(
            "/identity-providers",
            json={
                "name": "corporate",
                "kind": "oidc",
                "issuer": provider.issuer,
                "clientId": "treadle-console",
                "clientSecret": "idp-secret",
                "allowPrivateNetwork": True,
            },
        )
        assert idp.status_code == 201, idp.text
        idp_id = idp.json()["identityProvider"]["id"]
        made = served.rest.post(
            "/api-keys", json={"name": "alice", "workspaceId": served.workspace_id}
        )
        assert made.status_code == 201, made.text
        # The provider's page links a stylesheet on a CDN: tests stay on loopback.
        chromium.execute_cdp_cmd("Network.enable", {})
        chromium.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*://cdn.jsdelivr.net/*"]})
        chromium.implicitly_wait(10)
        chromium.get(f"{served.base_url}/console/signin?idp={idp_id}")
        accessible(chromium)
        chromium.find_element(By.LINK_TEXT, "Sign in with corporate").click()
        chromium.find_element(By.NAME, "sub").send_keys("alice")
        chromium.find_element(By.XPATH, "//button[text()='Authorize']").click()
        titled(chromium, "Approvals")
        assert "alice (" in chromium.find_element(By.CLASS_NAME, "who").text
        assert "one workspace" in chromium.find_element(By.CLASS_NAME, "who").text
        served.rest.delete(f"/api-keys/{made.json()['apiKey']['id']}")
        chromium.get(f"{served.base_url}/console/keys")
        assert chromium.title.startswith("Sign in")
