"""An end user saves their key in a real browser: headless Chromium on `treadle serve`'s
connect page. Chromium and its driver come from Debian; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from test_approval_browser import CHROMIUM, Served, chromium, served

__all__ = ["chromium", "served"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium: apt-get install chromium chromium-driver",
)

KEY = "sk_browser-personal-key-0123456789"


@pytest.fixture
def alice(served: Served) -> str:
    rest = served.rest
    configured = rest.post(
        f"/workspaces/{served.workspace_id}/integrations",
        json={
            "integrationName": "keyed",
            "connectionStrategy": "per_user",
            "integrationAlias": "keyed",
        },
    )
    assert configured.status_code == 201, configured.text
    user = rest.post("/end-users", json={"workspaceId": served.workspace_id, "externalId": "alice"})
    assert user.status_code == 201, user.text
    user_id: str = user.json()["endUser"]["id"]
    return user_id


def test_an_end_user_saves_a_key_in_the_browser_and_calls_use_it(
    served: Served, alice: str, chromium: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    link = served.rest.post(f"/end-users/{alice}/connect-token").json()["connectUrl"]
    assert link.startswith(f"{served.base_url}/connect?token=")

    chromium.get(link)
    assert chromium.title == "Connect your accounts"
    assert "Keyed" in chromium.find_element(By.TAG_NAME, "main").text
    chromium.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(KEY)
    chromium.find_element(By.CSS_SELECTOR, "button.save-key").click()
    WebDriverWait(chromium, 10).until(expected_conditions.title_is("Connection saved"))
    assert KEY not in chromium.page_source

    ran = served.rest.post(
        "/actions/execute",
        json={
            "workspaceId": served.workspace_id,
            "integrationName": "keyed",
            "integrationAlias": "keyed",
            "actionName": "whoami",
            "endUserId": "alice",
        },
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"]["connection"] == "user_alice_keyed"
