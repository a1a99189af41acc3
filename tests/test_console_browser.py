"""A person uses the web console in a real browser: headless Chromium on `treadle serve`.

Sign in with the key `treadle init` printed, add the kv-store integration under an alias,
approve a gated call in the inbox and see the call complete, revoke a key and see it refused.
Chromium and its driver come from Debian, as in tests/test_approval_browser.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest

from test_approval_browser import CHROMIUM, PHONE, Served, chromium, served  # noqa: F401

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium: apt-get install chromium chromium-driver",
)


def titled(driver: Any, prefix: str) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.title.startswith(prefix))


def flash(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 10).until(
        expected_conditions.text_to_be_present_in_element((By.CLASS_NAME, "flash"), text)
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
