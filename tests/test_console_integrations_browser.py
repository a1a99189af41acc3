"""A person configures a workspace in the console with a real browser (headless Chromium on
`treadle serve`, at phone width): adds the kv-store integration under an alias, makes an
enforced partial and watches the key leave the previewed tool as they type, creates an
approval policy. Chromium and its driver come from Debian, as in tests/test_approval_browser.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from test_approval_browser import CHROMIUM, Served, chromium, served  # noqa: F401
from test_console_browser import accessible, flash, no_overflow, sign_in, titled

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium: apt-get install chromium chromium-driver",
)


def previewed_schema(driver: Any) -> dict[str, Any]:
    # One script reads the element and its text together: htmx swaps the preview as the person
    # types, so an element found by one WebDriver command can be gone by the next (stale).
    text = driver.execute_script("return document.getElementById('preview-schema').textContent")
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_a_person_adds_kv_store_makes_an_enforced_partial_and_a_policy(
    served: Served,  # noqa: F811
    chromium: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from selenium.webdriver.support.wait import WebDriverWait

    sign_in(chromium, served)
    chromium.find_element(By.LINK_TEXT, "Workspaces").click()
    titled(chromium, "Workspaces")
    chromium.find_element(By.CSS_SELECTOR, "main ul.list a").click()
    # The catalog tells what each action does.
    details = chromium.find_element(By.XPATH, "//li[a[contains(., 'Key-Value Store')]]/details")
    details.find_element(By.TAG_NAME, "summary").click()
    assert "Store a JSON value under a key" in details.text
    chromium.find_element(By.PARTIAL_LINK_TEXT, "Key-Value Store").click()
    chromium.find_element(By.ID, "integrationAlias").send_keys("notes")
    chromium.find_element(
        By.CSS_SELECTOR, "main form[action$='/integrations'] button[type=submit]"
    ).click()
    flash(chromium, "Added notes.")

    # Its settings page, then a new partial for `put`.
    chromium.find_element(By.CSS_SELECTOR, "a[aria-label='Edit notes']").click()
    titled(chromium, "notes")
    accessible(chromium)
    chromium.find_element(By.LINK_TEXT, "New partial").click()
    titled(chromium, "New partial")
    Select(chromium.find_element(By.ID, "action")).select_by_value("put")
    chromium.find_element(By.CSS_SELECTOR, "main form[method=get] button").click()
    chromium.find_element(By.CSS_SELECTOR, "input[type=hidden][name=actionName][value=put]")
    assert chromium.find_element(By.ID, "preview-name").text == "notes__put"
    assert "key" in previewed_schema(chromium)["properties"]

    chromium.find_element(By.ID, "name").send_keys("fixed key")
    chromium.find_element(By.ID, "value-key").send_keys("greeting")
    chromium.find_element(By.ID, "value-key-enforced").click()
    # htmx refreshes the preview as the person edits: the enforced key leaves the schema.
    WebDriverWait(chromium, 10).until(
        lambda d: "key" not in previewed_schema(d).get("properties", {})
    )
    assert previewed_schema(chromium)["required"] == ["value"]
    no_overflow(chromium)
    accessible(chromium)
    chromium.execute_script("document.getElementById('tool-preview').scrollIntoView()")
    assert chromium.save_screenshot(str(tmp_path / "console-partial-phone.png"))
    chromium.find_element(By.XPATH, "//button[normalize-space()='Create partial']").click()
    flash(chromium, "Saved fixed key.")
    assert "key" not in previewed_schema(chromium)["properties"]
    found = served.rest.get("/partials", params={"workspaceId": served.workspace_id}).json()
    (partial,) = found["partials"]
    assert (partial["values"], partial["enforcedKeys"]) == ({"key": "greeting"}, ["key"])
    assert partial["isDefault"] is True

    # A policy: puts of this workspace wait for a person, decided only in the console.
    chromium.find_element(By.LINK_TEXT, "Policies").click()
    titled(chromium, "Approval policies")
    chromium.find_element(By.LINK_TEXT, "New policy").click()
    titled(chromium, "New policy")
    accessible(chromium)
    chromium.find_element(By.ID, "name").send_keys("puts need a person")
    Select(chromium.find_element(By.ID, "workspaceId")).select_by_value(served.workspace_id)
    chromium.find_element(By.ID, "mode-dashboard_only").click()
    chromium.find_element(By.ID, "actionNames").send_keys("put")
    chromium.find_element(By.ID, "condition-0-path").send_keys("key")
    Select(chromium.find_element(By.ID, "condition-0-op")).select_by_value("exists")
    no_overflow(chromium)
    assert chromium.save_screenshot(str(tmp_path / "console-policy-phone.png"))
    chromium.find_element(By.XPATH, "//button[normalize-space()='Create policy']").click()
    flash(chromium, "Created puts need a person.")
    (policy,) = served.rest.get("/approval-policies").json()["policies"]
    assert (policy["workspaceId"], policy["decision"]) == (served.workspace_id, "require_approval")
    assert (policy["approvalAccessMode"], policy["actionNames"]) == ("dashboard_only", ["put"])
    assert policy["rules"]["conditions"] == [{"path": "key", "op": "exists", "value": None}]

    # A documented refusal beside its field: a priority that is no number.
    priority = chromium.find_element(By.ID, "priority")
    priority.clear()
    priority.send_keys("soon")
    chromium.find_element(By.XPATH, "//button[normalize-space()='Save policy']").click()
    assert "VALIDATION_ERROR" in chromium.find_element(By.ID, "priority-error").text
    assert chromium.find_element(By.ID, "priority").get_attribute("aria-invalid") == "true"
    assert chromium.switch_to.active_element == chromium.find_element(By.ID, "priority")
    accessible(chromium)
    chromium.find_element(By.LINK_TEXT, "Approval policies").click()
    titled(chromium, "Approval policies")
    assert "puts need a person" in chromium.find_element(By.TAG_NAME, "main").text
    accessible(chromium)
