"""A person signs an MCP client in from a real browser: headless Chromium on the consent page.

The SDK's `OAuthClientProvider` sends Chromium to the authorization URL; the person pastes an
API key, names the end user and allows; Chromium follows the redirect to the client's loopback
callback, which hands the code back to the SDK. Chromium and its driver come from Debian, as
in test_approval_browser.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp.shared.auth import AuthorizationCodeResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from loopback import serve
from mcp_harness import McpEnv, ServeProcess
from oauth_signin import MemoryStorage, provider, signed_in_client
from test_mcp_oauth import certificate, connect_keyed, oauth_serve, whoami

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE = (390, 844)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium: apt-get install chromium chromium-driver",
    ),
]
__all__ = ["certificate", "oauth_serve"]  # fixtures shared with test_mcp_oauth.py


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
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
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    metrics = {"width": PHONE[0], "height": PHONE[1], "pixelRatio": 2.0}
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()


class BrowserPerson:
    """Answers the consent page in Chromium; the callback server hands the code over."""

    def __init__(self, driver: Any, api_key: str, end_user: str) -> None:
        self.driver = driver
        self.api_key = api_key
        self.end_user = end_user
        self.answered = anyio.Event()
        self.answer: AuthorizationCodeResult | None = None
        self.page_text = ""
        self.overflow = 1

    def app(self) -> Starlette:
        async def callback(request: Request) -> Response:
            query = request.query_params
            self.answer = AuthorizationCodeResult(
                code=query["code"], state=query.get("state"), iss=query.get("iss")
            )
            self.answered.set()
            return HTMLResponse("<title>Signed in</title><p>You can close this tab.</p>")

        return Starlette(routes=[Route("/callback", callback)])

    def _consent(self, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        driver = self.driver
        driver.get(url)
        assert driver.title == "Sign in"
        self.page_text = driver.find_element(By.TAG_NAME, "main").text
        self.overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        for button in driver.find_elements(By.TAG_NAME, "button"):
            assert button.is_displayed()
            assert button.size["height"] >= 40
            assert button.location["x"] + button.size["width"] <= PHONE[0]
        driver.find_element(By.ID, "api_key").send_keys(self.api_key)
        driver.find_element(By.ID, "end_user").send_keys(self.end_user)
        driver.find_element(By.CSS_SELECTOR, "button.allow").click()
        WebDriverWait(driver, 10).until(expected_conditions.title_is("Signed in"))

    async def redirect(self, url: str) -> None:
        await anyio.to_thread.run_sync(self._consent, url)

    async def callback(self) -> AuthorizationCodeResult:
        with anyio.fail_after(10):
            await self.answered.wait()
        assert self.answer is not None
        return self.answer


async def test_a_person_signs_the_client_in_from_chromium_on_a_phone(
    mcp_env: McpEnv, oauth_serve: ServeProcess, chromium: Any
) -> None:
    await connect_keyed(mcp_env)
    await mcp_env.create_server()
    url = f"{oauth_serve.base_url}/mcp/{mcp_env.server_id}"
    person = BrowserPerson(chromium, mcp_env.api_key, "alice")
    async with serve(person.app()) as port:
        auth = provider(url, person, MemoryStorage(), redirect=f"http://127.0.0.1:{port}/callback")
        async with signed_in_client(url, auth, "2026-07-28") as client:
            assert await whoami(client) == {"connection": "conn-alice", "endUser": "alice"}
    for shown in ("Test MCP client", "test server", "keyed__whoami"):
        assert shown in person.page_text
    assert person.overflow <= 0
